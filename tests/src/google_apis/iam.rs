//! IAM as the deploy meets it: policies (of projects, service accounts and other resources),
//! custom roles, and the eventual consistency of service accounts created moments before.

use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};

use super::reply::{error, ok};
use super::state::State;

/// Where the IAM policy of the resource at `path` is stored.
pub(super) fn iam_key(path: &str) -> String {
    format!("{path}#iam")
}

/// A member of `policy` that IAM does not see yet, now visible (the caller fails this once).
pub(super) fn unseen_member(st: &mut State, policy: &Value) -> Option<String> {
    let members = policy["bindings"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|b| b["members"].as_array().cloned().unwrap_or_default());
    for member in members {
        let member = member.as_str().unwrap_or_default().to_string();
        if st.not_yet_visible.remove(&member) {
            return Some(member.trim_start_matches("serviceAccount:").to_string());
        }
    }
    None
}

/// The error IAM gives for a member created moments ago (INVALID_ARGUMENT, as documented).
pub(super) fn not_yet_a_member(email: &str) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        &format!("Service account {email} does not exist."),
    )
}

/// IAM custom roles (`projects/P/roles`), as the real API keeps them: created under the
/// body's `roleId`; deleting one only marks it `deleted` (it stays 7 days, and its id cannot
/// be used for a new role meanwhile: `undelete` brings it back); `None` for what the generic
/// store handles (GET, PATCH).
pub(super) fn custom_role(
    st: &mut State,
    method: &Method,
    path: &str,
    body: Value,
) -> Option<Response> {
    let key = ("iam".to_string(), path.to_string());
    match *method {
        Method::POST if path.ends_with("/roles") => {
            let id = body["roleId"].as_str().unwrap_or_default().to_string();
            let name = format!("{path}/{id}");
            let k = ("iam".to_string(), name.clone());
            if let Some(existing) = st.resources.get(&k) {
                return Some(if existing["deleted"] == json!(true) {
                    error(
                        StatusCode::BAD_REQUEST,
                        &format!("You can't create a role with role_id ({id}) where there is an existing role with that role_id in a deleted state."),
                    )
                } else {
                    error(
                        StatusCode::CONFLICT,
                        &format!("A role named {id} in {path} already exists."),
                    )
                });
            }
            let mut role = body["role"].clone();
            role["name"] = json!(name);
            role["etag"] = json!("BwWKmjvelug=");
            st.resources.insert(k, role.clone());
            Some(ok(role))
        }
        Method::DELETE => {
            let role = st.resources.get_mut(&key)?;
            role["deleted"] = json!(true);
            Some(ok(role.clone()))
        }
        _ => None,
    }
}

/// `undelete` of a custom role: it is no longer marked deleted.
pub(super) fn undelete(st: &mut State, api: &str, resource: &str) -> Response {
    match st.resources.get_mut(&(api.into(), resource.into())) {
        Some(role) => {
            if let Some(o) = role.as_object_mut() {
                o.remove("deleted");
            }
            ok(role.clone())
        }
        None => error(StatusCode::NOT_FOUND, &format!("{resource} was not found")),
    }
}

/// `getIamPolicy` of any resource: what `setIamPolicy` stored, or an empty policy.
pub(super) fn get_policy(st: &State, api: &str, resource: &str) -> Response {
    let k = (api.to_string(), iam_key(resource));
    ok(st
        .resources
        .get(&k)
        .cloned()
        .unwrap_or(json!({"etag": "BwXhqDAAAAA=", "version": 1})))
}

/// `setIamPolicy` of any resource; a member created moments before fails it once.
pub(super) fn set_policy(st: &mut State, api: &str, resource: &str, body: &Value) -> Response {
    let k = (api.to_string(), iam_key(resource));
    if let Some(email) = unseen_member(st, &body["policy"]) {
        return not_yet_a_member(&email);
    }
    let mut policy = body["policy"].clone();
    st.counter += 1;
    policy["etag"] = json!(format!("BwXh{:08}", st.counter));
    st.resources.insert(k, policy.clone());
    ok(policy)
}

/// After the service account at `path` (`removed`) is deleted: IAM keeps its bindings,
/// renamed, as the real IAM does: the account is gone, and an account created later with the
/// same email is another principal.
pub(super) fn account_deleted(st: &mut State, path: &str, removed: &Value) {
    let email = path.rsplit('/').next().unwrap_or_default();
    let uid = removed["uniqueId"].as_str().unwrap_or("0").to_string();
    let (live, dead) = (
        format!("serviceAccount:{email}"),
        format!("deleted:serviceAccount:{email}?uid={uid}"),
    );
    for ((_, p), policy) in st.resources.iter_mut() {
        if !p.ends_with("#iam") {
            continue;
        }
        for binding in policy["bindings"].as_array_mut().into_iter().flatten() {
            for member in binding["members"].as_array_mut().into_iter().flatten() {
                if member.as_str() == Some(&live) {
                    *member = json!(dead);
                }
            }
        }
    }
}
