//! Traffic generation: NetFlow/IPFIX encoders and (later) the data-centre profile.

pub mod encode;
