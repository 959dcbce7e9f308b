//! GeoIP: a MaxMind DB (GeoIP2/GeoLite2-Country layout, or the flat `country_code`
//! layout of ip-location-db) flattened into a longest-prefix-match table at load time,
//! so that a lookup per flow is a binary search instead of an mmdb tree walk.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;

use ipnetwork::{IpNetwork, Ipv4Network};
use serde::Deserialize;

use super::countries::{self, CountryCode};
use super::lpm::IpTable;

#[derive(Debug, thiserror::Error)]
pub enum GeoIpError {
    #[error("cannot open GeoIP database {path}: {message}")]
    Open { path: String, message: String },
    #[error("GeoIP database {path} is unreadable at {network}: {message}")]
    Read {
        path: String,
        network: String,
        message: String,
    },
}

#[derive(Deserialize)]
struct IsoRec<'a> {
    #[serde(borrow)]
    iso_code: Option<&'a str>,
}

/// Both layouts: GeoLite2 (`country.iso_code`, `registered_country.iso_code`) and
/// ip-location-db (`country_code`).
#[derive(Deserialize)]
struct GeoRec<'a> {
    #[serde(borrow)]
    country: Option<IsoRec<'a>>,
    #[serde(borrow)]
    registered_country: Option<IsoRec<'a>>,
    #[serde(borrow)]
    country_code: Option<&'a str>,
}

/// A flattened GeoIP database.
#[derive(Debug, Clone, Default)]
pub struct GeoTable {
    table: IpTable<CountryCode>,
    /// What was loaded (file name, database type, build time) for logs and metrics.
    pub description: String,
    pub networks: usize,
}

impl GeoTable {
    pub fn lookup(&self, ip: IpAddr) -> Option<CountryCode> {
        self.table.get(ip)
    }

    pub fn heap_bytes(&self) -> usize {
        self.table.heap_bytes()
    }

    pub fn ranges(&self) -> usize {
        self.table.ranges()
    }

    /// Builds from explicit prefixes (tests, the demo's own database).
    pub fn from_prefixes(prefixes: impl IntoIterator<Item = (IpNetwork, CountryCode)>) -> Self {
        let v: Vec<(IpNetwork, CountryCode)> = prefixes.into_iter().collect();
        let networks = v.len();
        Self {
            table: IpTable::build(v),
            description: "inline".into(),
            networks,
        }
    }

    /// Loads and flattens an mmdb file.
    pub fn load(path: &Path) -> Result<Self, GeoIpError> {
        let p = path.display().to_string();
        let reader = maxminddb::Reader::open_readfile(path).map_err(|e| GeoIpError::Open {
            path: p.clone(),
            message: e.to_string(),
        })?;
        Self::from_reader(&reader, &p)
    }

    pub fn from_bytes(bytes: Vec<u8>, name: &str) -> Result<Self, GeoIpError> {
        let reader = maxminddb::Reader::from_source(bytes).map_err(|e| GeoIpError::Open {
            path: name.to_string(),
            message: e.to_string(),
        })?;
        Self::from_reader(&reader, name)
    }

    fn from_reader<S: AsRef<[u8]>>(
        reader: &maxminddb::Reader<S>,
        name: &str,
    ) -> Result<Self, GeoIpError> {
        let md = reader.metadata();
        let description = format!(
            "{} ({} built {})",
            name,
            md.database_type,
            jiff::Timestamp::from_second(md.build_epoch as i64)
                .map(|t| t.strftime("%Y-%m-%d").to_string())
                .unwrap_or_default()
        );
        let mut by_offset: HashMap<usize, CountryCode> = HashMap::new();
        let mut prefixes: Vec<(IpNetwork, CountryCode)> = Vec::new();
        let iter = reader
            .networks(Default::default())
            .map_err(|e| GeoIpError::Open {
                path: name.to_string(),
                message: e.to_string(),
            })?;
        for item in iter {
            let item = item.map_err(|e| GeoIpError::Read {
                path: name.to_string(),
                network: "?".into(),
                message: e.to_string(),
            })?;
            let net = item.network().map_err(|e| GeoIpError::Read {
                path: name.to_string(),
                network: "?".into(),
                message: e.to_string(),
            })?;
            let code = match item.offset() {
                Some(off) => match by_offset.get(&off) {
                    Some(c) => *c,
                    None => {
                        let rec: Option<GeoRec<'_>> =
                            item.decode().map_err(|e| GeoIpError::Read {
                                path: name.to_string(),
                                network: net.to_string(),
                                message: e.to_string(),
                            })?;
                        let c = rec
                            .and_then(|r| {
                                r.country
                                    .and_then(|c| c.iso_code)
                                    .or(r.country_code)
                                    .or(r.registered_country.and_then(|c| c.iso_code))
                            })
                            .map(countries::pack)
                            .unwrap_or(0);
                        by_offset.insert(off, c);
                        c
                    }
                },
                None => 0,
            };
            if code == 0 {
                continue;
            }
            // IPv4 data of an IPv6 database lives at ::/96.
            let net = match net {
                IpNetwork::V6(n) if n.prefix() >= 96 && u128::from(n.network()) >> 32 == 0 => {
                    let v4 = std::net::Ipv4Addr::from(u128::from(n.network()) as u32);
                    match Ipv4Network::new(v4, n.prefix() - 96) {
                        Ok(n4) => IpNetwork::V4(n4),
                        Err(_) => continue,
                    }
                }
                other => other,
            };
            prefixes.push((net, code));
        }
        let networks = prefixes.len();
        Ok(Self {
            table: IpTable::build(prefixes),
            description,
            networks,
        })
    }
}

/// Writes a country database in the GeoLite2-Country layout (country.iso_code,
/// country.names.en, continent.code). Used by the demo for the generator's own
/// Internet addresses, and by tests.
pub fn write_mmdb(prefixes: &[(IpNetwork, &str)]) -> Result<Vec<u8>, String> {
    use std::collections::BTreeMap;
    #[derive(serde::Serialize)]
    struct Names {
        en: String,
    }
    #[derive(serde::Serialize)]
    struct Country {
        iso_code: String,
        names: Names,
    }
    #[derive(serde::Serialize)]
    struct Continent {
        code: String,
        names: Names,
    }
    #[derive(serde::Serialize)]
    struct Rec {
        country: Country,
        continent: Continent,
    }
    let mut w = mmdb_writer::Writer::new("GeoLite2-Country");
    let mut sorted: BTreeMap<String, Vec<IpNetwork>> = BTreeMap::new();
    for (n, c) in prefixes {
        sorted.entry(c.to_string()).or_default().push(*n);
    }
    for (code, nets) in sorted {
        let cc = countries::pack(&code);
        let name = countries::name(cc).unwrap_or(&code).to_string();
        let cont = countries::continent_code(cc).unwrap_or("").to_string();
        let cont_name = countries::continent_name(&cont).unwrap_or("").to_string();
        let rec = Rec {
            country: Country {
                iso_code: code.clone(),
                names: Names { en: name },
            },
            continent: Continent {
                code: cont,
                names: Names { en: cont_name },
            },
        };
        for n in nets {
            let net: ipnet::IpNet = n.to_string().parse().map_err(|e| format!("{n}: {e}"))?;
            w.insert(net, &rec).map_err(|e| format!("{n}: {e}"))?;
        }
    }
    w.to_bytes().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_and_reads_geolite2_layout() {
        let bytes = write_mmdb(&[
            ("81.2.69.0/24".parse().unwrap(), "GB"),
            ("8.8.8.0/24".parse().unwrap(), "US"),
            ("2001:4860::/32".parse().unwrap(), "US"),
            ("133.0.0.0/8".parse().unwrap(), "JP"),
            ("133.5.0.0/16".parse().unwrap(), "KR"),
        ])
        .unwrap();
        let g = GeoTable::from_bytes(bytes, "test").unwrap();
        let c = |s: &str| g.lookup(s.parse().unwrap()).and_then(countries::name);
        assert_eq!(c("81.2.69.142"), Some("United Kingdom"));
        assert_eq!(c("8.8.8.8"), Some("United States"));
        assert_eq!(c("2001:4860:4860::8888"), Some("United States"));
        assert_eq!(c("133.1.2.3"), Some("Japan"));
        assert_eq!(c("133.5.2.3"), Some("South Korea"));
        assert_eq!(c("203.0.113.7"), None);
        assert_eq!(c("10.0.0.1"), None);
        assert!(g.networks >= 5);
    }

    #[test]
    fn reads_flat_country_code_layout() {
        #[derive(serde::Serialize)]
        struct Flat {
            country_code: String,
        }
        let mut w = mmdb_writer::Writer::new("geo-whois-asn-country");
        w.insert(
            "1.0.0.0/24".parse::<ipnet::IpNet>().unwrap(),
            &Flat {
                country_code: "AU".into(),
            },
        )
        .unwrap();
        w.insert(
            "2a00::/12".parse::<ipnet::IpNet>().unwrap(),
            &Flat {
                country_code: "DE".into(),
            },
        )
        .unwrap();
        let g = GeoTable::from_bytes(w.to_bytes().unwrap(), "flat").unwrap();
        assert_eq!(
            g.lookup("1.0.0.1".parse().unwrap()),
            Some(countries::pack("AU"))
        );
        assert_eq!(
            g.lookup("2a00:1::1".parse().unwrap()),
            Some(countries::pack("DE"))
        );
        assert_eq!(g.lookup("1.0.1.1".parse().unwrap()), None);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(GeoTable::from_bytes(vec![0; 100], "garbage").is_err());
    }
}
