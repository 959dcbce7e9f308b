//! The web page (assets compiled into the binary) and dashboards (persisted in the
//! state dir as dashboards.json).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::{Deserialize, Serialize};

use super::http::HttpState;

const INDEX: &str = include_str!("../../web/index.html");
const APP_JS: &str = include_str!("../../web/app.js");
const APP_CSS: &str = include_str!("../../web/app.css");

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Panel {
    pub title: String,
    pub query: String,
    /// "1h", "24h", "2d", "7d", or "custom" with from/to (RFC 3339).
    #[serde(default = "default_range")]
    pub range: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Time-of-day window "21:00-06:30".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub during: Option<String>,
    /// Section heading the panel belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section: Option<String>,
}

fn default_range() -> String {
    "24h".into()
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Dashboard {
    pub name: String,
    pub panels: Vec<Panel>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Dashboards {
    pub dashboards: Vec<Dashboard>,
}

/// The default dashboard: the seed queries of the three scenarios.
pub fn default_dashboards() -> Dashboards {
    let p = |section: &str, title: &str, query: &str, range: &str, during: Option<&str>| Panel {
        title: title.into(),
        query: query.into(),
        range: range.into(),
        from: None,
        to: None,
        during: during.map(str::to_string),
        section: Some(section.into()),
    };
    let t = "Troubleshooting";
    let s = "Security";
    let z = "Sizing";
    Dashboards {
        dashboards: vec![Dashboard {
            name: "Operations".into(),
            panels: vec![
                p(
                    t,
                    "Physical-to-physical flows by traffic",
                    "flows where flow type = 'Physical-Physical' order by Total Traffic",
                    "24h",
                    None,
                ),
                p(
                    t,
                    "Busiest switch ports",
                    "top 20 switch ports by Network rate in last 2 days",
                    "2d",
                    None,
                ),
                p(
                    t,
                    "Busiest VMs",
                    "top 5 VMs by Network Rate in last 2 days",
                    "2d",
                    None,
                ),
                p(
                    s,
                    "Traffic by destination country",
                    "series(sum(session count)), series(sum(packets)), series(sum(bytes rate)) of flows group by Destination Country order by sum(Total Traffic)",
                    "24h",
                    None,
                ),
                p(
                    s,
                    "VMs reaching the Internet, by subnet",
                    "series(sum(session count)), series(sum(packets)), series(sum(bytes rate)) of flows where Flow Type = 'Source is VM' and flow type = 'Destination is internet' group by Source Subnet order by sum(Total Traffic)",
                    "24h",
                    None,
                ),
                p(
                    s,
                    "VMs talking to the United Kingdom",
                    "series(sum(session count)), series(sum(packets)), series(sum(bytes rate)) of Flows Destination Country = 'United Kingdom' group by Source VM in last 7 days",
                    "7d",
                    None,
                ),
                p(
                    s,
                    "SSH/Telnet/RDP from the Internet, by country",
                    "flows where Flow Type = 'Source is Internet' and Port in ('22', '23', '3389') group by Source Country",
                    "24h",
                    None,
                ),
                p(
                    s,
                    "Off-hours east-west SSH/Telnet/RDP by VM",
                    "series(sum(session count)), series(sum(packets)), series(sum(bytes rate)) of flow where port in (22, 23, 3389) and flow type = 'east-west' group by source vm in last 7 days during 21:00-06:30",
                    "7d",
                    None,
                ),
                p(
                    z,
                    "vlan-1105 leaving its segment",
                    "flows where Source L2 Network in ( 'vlan-1105' ) and Destination L2 Network not in ( 'vlan-1105' ) order by Total Traffic",
                    "24h",
                    None,
                ),
                p(
                    z,
                    "vlan-1105 leaving its segment over time",
                    "series(sum(session count)), series(sum(packets)), series(sum(bytes rate)) of flows where Source L2 Network in (vlan-1105) and Destination L2 Network not in ( 'vlan-1105' )",
                    "24h",
                    None,
                ),
            ],
        }],
    }
}

pub struct Web {
    path: PathBuf,
    data: Mutex<Dashboards>,
}

impl Web {
    /// Loads dashboards.json from the state dir (the default dashboard when absent; a
    /// corrupt file is kept aside and reported, never lost).
    pub fn load(state_dir: &std::path::Path) -> Self {
        let path = state_dir.join("dashboards.json");
        let data = match std::fs::read(&path) {
            Ok(b) => match serde_json::from_slice::<Dashboards>(&b) {
                Ok(d) => d,
                Err(e) => {
                    let aside = path.with_extension("json.corrupt");
                    let _ = std::fs::rename(&path, &aside);
                    tracing::error!(error = %e, kept = %aside.display(), "dashboards.json is unreadable; starting from the default dashboard");
                    default_dashboards()
                }
            },
            Err(_) => default_dashboards(),
        };
        Self {
            path,
            data: Mutex::new(data),
        }
    }

    fn save(&self, d: &Dashboards) -> Result<(), String> {
        let bytes = serde_json::to_vec_pretty(d).map_err(|e| e.to_string())?;
        crate::util::write_atomic(&self.path, &bytes)
            .map_err(|e| format!("cannot save dashboards: {e}"))
    }

    fn with<R>(
        &self,
        f: impl FnOnce(&mut Dashboards) -> Result<R, (StatusCode, String)>,
    ) -> Result<R, (StatusCode, String)> {
        let mut g = match self.data.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let mut copy = g.clone();
        let r = f(&mut copy)?;
        self.save(&copy)
            .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e))?;
        *g = copy;
        Ok(r)
    }

    pub fn list(&self) -> Dashboards {
        match self.data.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }
}

fn asset(ct: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, ct),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

fn err(code: StatusCode, msg: String) -> Response {
    (code, Json(serde_json::json!({"error": {"message": msg}}))).into_response()
}

// the error is the ready-made HTTP response; it is built once per failed request
#[allow(clippy::result_large_err)]
fn web(s: &HttpState) -> Result<Arc<Web>, Response> {
    s.web
        .clone()
        .ok_or_else(|| err(StatusCode::NOT_FOUND, "no web page on this server".into()))
}

async fn list(State(s): State<HttpState>) -> Response {
    match web(&s) {
        Ok(w) => Json(w.list()).into_response(),
        Err(r) => r,
    }
}

async fn add_panel(
    State(s): State<HttpState>,
    Path(name): Path<String>,
    Json(p): Json<Panel>,
) -> Response {
    let w = match web(&s) {
        Ok(w) => w,
        Err(r) => return r,
    };
    let name = name.trim().to_string();
    if name.is_empty() || name.len() > 100 || p.query.trim().is_empty() || p.query.len() > 4096 {
        return err(
            StatusCode::BAD_REQUEST,
            "a dashboard needs a name (up to 100 characters) and the panel a query".into(),
        );
    }
    // only queries that parse are pinned
    if let Err(e) = crate::query::parser::parse(&p.query) {
        return (StatusCode::BAD_REQUEST, Json(e.to_json(&p.query))).into_response();
    }
    match w.with(|d| {
        if d.dashboards.len() >= 100 && !d.dashboards.iter().any(|x| x.name == name) {
            return Err((StatusCode::BAD_REQUEST, "at most 100 dashboards".into()));
        }
        let db = match d.dashboards.iter_mut().position(|x| x.name == name) {
            Some(i) => &mut d.dashboards[i],
            None => {
                d.dashboards.push(Dashboard {
                    name: name.clone(),
                    panels: vec![],
                });
                let n = d.dashboards.len() - 1;
                &mut d.dashboards[n]
            }
        };
        if db.panels.len() >= 100 {
            return Err((
                StatusCode::BAD_REQUEST,
                "at most 100 panels per dashboard".into(),
            ));
        }
        db.panels.push(p);
        Ok(db.clone())
    }) {
        Ok(db) => Json(db).into_response(),
        Err((c, m)) => err(c, m),
    }
}

async fn delete_panel(
    State(s): State<HttpState>,
    Path((name, idx)): Path<(String, usize)>,
) -> Response {
    let w = match web(&s) {
        Ok(w) => w,
        Err(r) => return r,
    };
    match w.with(|d| {
        let db = d
            .dashboards
            .iter_mut()
            .find(|x| x.name == name)
            .ok_or((StatusCode::NOT_FOUND, format!("no dashboard '{name}'")))?;
        if idx >= db.panels.len() {
            return Err((StatusCode::NOT_FOUND, format!("no panel {idx}")));
        }
        db.panels.remove(idx);
        Ok(db.clone())
    }) {
        Ok(db) => Json(db).into_response(),
        Err((c, m)) => err(c, m),
    }
}

async fn delete_dashboard(State(s): State<HttpState>, Path(name): Path<String>) -> Response {
    let w = match web(&s) {
        Ok(w) => w,
        Err(r) => return r,
    };
    match w.with(|d| {
        let before = d.dashboards.len();
        d.dashboards.retain(|x| x.name != name);
        if d.dashboards.len() == before {
            return Err((StatusCode::NOT_FOUND, format!("no dashboard '{name}'")));
        }
        Ok(())
    }) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err((c, m)) => err(c, m),
    }
}

pub fn routes(r: Router<HttpState>) -> Router<HttpState> {
    r.route(
        "/",
        get(|| async { asset("text/html; charset=utf-8", INDEX) }),
    )
    .route(
        "/app.js",
        get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
    )
    .route(
        "/app.css",
        get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
    )
    .route("/api/v1/dashboards", get(list))
    .route("/api/v1/dashboards/{name}", delete(delete_dashboard))
    .route("/api/v1/dashboards/{name}/panels", post(add_panel))
    .route(
        "/api/v1/dashboards/{name}/panels/{idx}",
        delete(delete_panel),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_dashboard_queries_all_parse() {
        for d in default_dashboards().dashboards {
            for p in d.panels {
                crate::query::parser::parse(&p.query)
                    .unwrap_or_else(|e| panic!("{}", e.render(&p.query)));
            }
        }
    }

    #[test]
    fn dashboards_persist_and_survive_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let w = Web::load(dir.path());
        w.with(|d| {
            d.dashboards.push(Dashboard {
                name: "mine".into(),
                panels: vec![],
            });
            Ok(())
        })
        .unwrap();
        let w2 = Web::load(dir.path());
        assert!(w2.list().dashboards.iter().any(|d| d.name == "mine"));
        std::fs::write(dir.path().join("dashboards.json"), b"{not json").unwrap();
        let w3 = Web::load(dir.path());
        assert_eq!(w3.list(), default_dashboards());
        assert!(dir.path().join("dashboards.json.corrupt").exists());
    }
}
