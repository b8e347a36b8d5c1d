//! Cloud DNS as the deploy meets it: managed zones, which deploy only reads (tests seed them,
//! as an operator makes them), and their IAM policies. gcloud describes a zone with the v1 API
//! (`projects/P/managedZones/Z`) but reads and writes its policy with v2
//! (`projects/P/locations/global/managedZones/Z:getIamPolicy`): both name the same zone here.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::Value;

use super::iam;
use super::reply::error;
use super::state::State;

/// The zone's v1 path (`projects/P/managedZones/Z`) for a v1 or v2 one.
fn zone_path(resource: &str) -> String {
    resource.replacen("/locations/global/managedZones/", "/managedZones/", 1)
}

/// Whether `path` names one managed zone (not the collection, not something below a zone).
fn is_zone(path: &str) -> bool {
    matches!(
        path.split('/').collect::<Vec<_>>()[..],
        ["projects", _, "managedZones", _]
    )
}

/// The 404 Cloud DNS answers for a zone that does not exist.
fn no_such_zone(path: &str) -> Response {
    let zone = path.rsplit('/').next().unwrap_or(path);
    error(
        StatusCode::NOT_FOUND,
        &format!("The 'parameters.managedZone' resource named '{zone}' does not exist."),
    )
}

/// `GET` of a zone that is not there: Cloud DNS's 404 (`None` for anything else, which the
/// generic store answers).
pub(super) fn missing_zone(st: &State, path: &str) -> Option<Response> {
    let key = ("dns".to_string(), path.to_string());
    (is_zone(path) && !st.resources.contains_key(&key)).then(|| no_such_zone(path))
}

/// `getIamPolicy` and `setIamPolicy` of a zone: 404 when it does not exist, else the policy
/// kept under the zone's v1 path (a member created moments before fails a change once, as
/// everywhere in IAM).
pub(super) fn zone_policy(st: &mut State, resource: &str, verb: &str, body: &Value) -> Response {
    let zone = zone_path(resource);
    if !is_zone(&zone)
        || !st
            .resources
            .contains_key(&("dns".to_string(), zone.clone()))
    {
        return no_such_zone(&zone);
    }
    if verb == "setIamPolicy" {
        iam::set_policy(st, "dns", &zone, body)
    } else {
        iam::get_policy(st, "dns", &zone)
    }
}
