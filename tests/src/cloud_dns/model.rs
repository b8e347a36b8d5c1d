//! What the fake keeps — managed zones, their record sets and their changes — and how a change
//! applies: atomically, deletions first, as Cloud DNS does. No I/O here.

use serde_json::{json, Value};

use super::reply::ApiError;

/// One resource record set; `(name, type)` is its key within a zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordSet {
    /// Absolute, lower case, with the trailing dot: `_acme-challenge.example.test.`.
    pub name: String,
    /// `TXT`, `A`, `NS`, …
    pub rtype: String,
    pub ttl: u32,
    /// As in zone files: a TXT rrdata is a quoted string, `"\"abc\""`.
    pub rrdatas: Vec<String>,
}

impl RecordSet {
    /// A TXT record set whose rrdatas are `values` quoted (`abc` becomes `"abc"`).
    pub fn txt(name: &str, ttl: u32, values: &[&str]) -> RecordSet {
        RecordSet {
            name: name.to_ascii_lowercase(),
            rtype: "TXT".into(),
            ttl,
            rrdatas: values.iter().map(|v| quote_txt(v)).collect(),
        }
    }

    /// The text of each rrdata of a TXT set, unquoted (its character-strings joined).
    pub fn txt_values(&self) -> Vec<String> {
        self.rrdatas.iter().map(|d| unquote_txt(d)).collect()
    }

    /// `dns#resourceRecordSet` JSON.
    pub fn to_json(&self) -> Value {
        json!({
            "kind": "dns#resourceRecordSet",
            "name": self.name,
            "type": self.rtype,
            "ttl": self.ttl,
            "rrdatas": self.rrdatas,
        })
    }

    /// A record set of a change (`at`: `entity.change.additions[0]`). `ttl` is required for
    /// additions; a deletion without one matches no existing set.
    pub(super) fn from_json(v: &Value, at: &str, need_ttl: bool) -> Result<RecordSet, ApiError> {
        let text = |field: &str| match v.get(field) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            Some(Value::String(_)) | None | Some(Value::Null) => {
                Err(ApiError::required(&format!("{at}.{field}")))
            }
            Some(other) => Err(ApiError::invalid(format!(
                "Invalid value for '{at}.{field}': '{other}'"
            ))),
        };
        let name = text("name")?.to_ascii_lowercase();
        let rtype = text("type")?;
        if !rtype
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        {
            return Err(ApiError::invalid(format!(
                "Invalid value for '{at}.type': '{rtype}'"
            )));
        }
        let ttl = match v.get("ttl") {
            Some(Value::Number(n)) => n.as_u64(),
            Some(Value::String(s)) => s.parse().ok(),
            None | Some(Value::Null) if !need_ttl => Some(0),
            None | Some(Value::Null) => return Err(ApiError::required(&format!("{at}.ttl"))),
            Some(_) => None,
        };
        let ttl = ttl
            .and_then(|t| u32::try_from(t).ok())
            .ok_or_else(|| ApiError::invalid(format!("Invalid value for '{at}.ttl'")))?;
        let rrdatas: Vec<String> = match v.get("rrdatas") {
            Some(Value::Array(items)) => items
                .iter()
                .map(|d| d.as_str().map(str::to_owned))
                .collect::<Option<_>>()
                .ok_or_else(|| ApiError::invalid(format!("Invalid value for '{at}.rrdatas'")))?,
            _ => Vec::new(),
        };
        if rrdatas.is_empty() {
            return Err(ApiError::required(&format!("{at}.rrdatas")));
        }
        Ok(RecordSet {
            name,
            rtype,
            ttl,
            rrdatas,
        })
    }

    fn key(&self) -> (&str, &str) {
        (&self.name, &self.rtype)
    }

    /// `name. (TYPE)`, as Cloud DNS names a record set in its errors.
    fn label(&self) -> String {
        format!("{} ({})", self.name, self.rtype)
    }

    /// Equal as Cloud DNS compares a deletion with the existing set: name, type, TTL and the
    /// rrdatas in any order.
    fn matches(&self, other: &RecordSet) -> bool {
        let sorted = |r: &RecordSet| {
            let mut d = r.rrdatas.clone();
            d.sort();
            d
        };
        self.key() == other.key() && self.ttl == other.ttl && sorted(self) == sorted(other)
    }
}

/// `abc` as a zone-file character-string: `"abc"` (`"` and `\` escaped).
pub(super) fn quote_txt(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// The text of a TXT rrdata: its character-strings (quoted, or bare words) joined, escapes
/// (`\"`, `\\`, `\DDD`) resolved. `"abc"` and `abc` are both `abc`.
pub(super) fn unquote_txt(rrdata: &str) -> String {
    let mut out: Vec<u8> = Vec::with_capacity(rrdata.len());
    let bytes = rrdata.as_bytes();
    let mut in_quotes = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => in_quotes = !in_quotes,
            b'\\' if i + 1 < bytes.len() => {
                let digits = bytes
                    .get(i + 1..i + 4)
                    .filter(|d| d.iter().all(u8::is_ascii_digit));
                match digits.and_then(|d| std::str::from_utf8(d).ok()?.parse::<u8>().ok()) {
                    Some(byte) => {
                        out.push(byte);
                        i += 3;
                    }
                    None => {
                        out.push(bytes[i + 1]);
                        i += 1;
                    }
                }
            }
            b' ' | b'\t' if !in_quotes => {}
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `name` lower-cased with a trailing dot.
pub(super) fn fqdn(name: &str) -> String {
    let name = name.to_ascii_lowercase();
    if name.ends_with('.') {
        name
    } else {
        format!("{name}.")
    }
}

/// Whether `name` is `zone_dns_name` or below it (label-wise: `badexample.test.` is not under
/// `example.test.`).
fn in_zone(name: &str, zone_dns_name: &str) -> bool {
    name == zone_dns_name
        || name
            .strip_suffix(zone_dns_name)
            .is_some_and(|head| head.ends_with('.'))
}

/// One change to a zone, as `changes.create` recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub id: String,
    pub additions: Vec<RecordSet>,
    pub deletions: Vec<RecordSet>,
    /// `pending` until the first `changes.get` after it was made, when the test asked for
    /// pending changes; `done` otherwise.
    pub pending: bool,
    pub start_time: String,
}

impl Change {
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "kind": "dns#change",
            "id": self.id,
            "startTime": self.start_time,
            "status": if self.pending { "pending" } else { "done" },
        });
        if !self.additions.is_empty() {
            v["additions"] = self.additions.iter().map(RecordSet::to_json).collect();
        }
        if !self.deletions.is_empty() {
            v["deletions"] = self.deletions.iter().map(RecordSet::to_json).collect();
        }
        v
    }

    /// The TXT names the change touches.
    pub(super) fn txt_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .additions
            .iter()
            .chain(&self.deletions)
            .filter(|r| r.rtype == "TXT")
            .map(|r| r.name.clone())
            .collect();
        names.sort();
        names.dedup();
        names
    }
}

/// A public managed zone.
#[derive(Debug, Clone)]
pub struct Zone {
    pub name: String,
    /// Lower case, trailing dot: `example.test.`.
    pub dns_name: String,
    pub name_servers: Vec<String>,
    pub id: u64,
    pub creation_time: String,
    /// The apex SOA and NS sets come with the zone, as in Cloud DNS.
    pub rrsets: Vec<RecordSet>,
    /// Change `0` is the zone's creation (its SOA and NS), as in Cloud DNS.
    pub changes: Vec<Change>,
}

impl Zone {
    pub(super) fn new(
        name: &str,
        dns_name: &str,
        name_servers: &[&str],
        id: u64,
        now: &str,
    ) -> Zone {
        let dns_name = fqdn(dns_name);
        let name_servers: Vec<String> = if name_servers.is_empty() {
            (1..=4)
                .map(|i| format!("ns-cloud-a{i}.googledomains.com."))
                .collect()
        } else {
            name_servers.iter().map(|n| fqdn(n)).collect()
        };
        let soa = RecordSet {
            name: dns_name.clone(),
            rtype: "SOA".into(),
            ttl: 21600,
            rrdatas: vec![format!(
                "{} cloud-dns-hostmaster.google.com. 1 21600 3600 259200 300",
                name_servers[0]
            )],
        };
        let ns = RecordSet {
            name: dns_name.clone(),
            rtype: "NS".into(),
            ttl: 21600,
            rrdatas: name_servers.clone(),
        };
        Zone {
            name: name.into(),
            dns_name,
            name_servers,
            id,
            creation_time: now.into(),
            rrsets: vec![soa.clone(), ns.clone()],
            changes: vec![Change {
                id: "0".into(),
                additions: vec![soa, ns],
                deletions: Vec::new(),
                pending: false,
                start_time: now.into(),
            }],
        }
    }

    /// `dns#managedZone` JSON.
    pub fn to_json(&self) -> Value {
        json!({
            "kind": "dns#managedZone",
            "name": self.name,
            "dnsName": self.dns_name,
            "description": "",
            "id": self.id.to_string(),
            "nameServers": self.name_servers,
            "creationTime": self.creation_time,
            "visibility": "public",
        })
    }

    /// `changes.create` with `body` (a Change): checks everything, then applies all of it or
    /// nothing. Deletions come first and must match an existing set exactly (`404 notFound`
    /// when there is no set of that name and type, `412 conditionNotMet` when it differs);
    /// an addition whose set exists after the deletions is `409 alreadyExists`; a name outside
    /// the zone is `400 invalid`.
    pub(super) fn apply(
        &mut self,
        body: &Value,
        pending: bool,
        now: &str,
    ) -> Result<&Change, ApiError> {
        let list = |field: &str, need_ttl: bool| -> Result<Vec<RecordSet>, ApiError> {
            let items = match body.get(field) {
                None | Some(Value::Null) => return Ok(Vec::new()),
                Some(Value::Array(items)) => items,
                Some(_) => {
                    return Err(ApiError::invalid(format!(
                        "Invalid value for 'entity.change.{field}'"
                    )))
                }
            };
            let mut sets: Vec<RecordSet> = Vec::new();
            for (i, item) in items.iter().enumerate() {
                let at = format!("entity.change.{field}[{i}]");
                let set = RecordSet::from_json(item, &at, need_ttl)?;
                if !set.name.ends_with('.') || !in_zone(&set.name, &self.dns_name) {
                    return Err(ApiError::invalid(format!(
                        "Invalid value for '{at}.name': '{}'",
                        set.name
                    )));
                }
                if sets.iter().any(|s| s.key() == set.key()) {
                    return Err(ApiError::invalid(format!(
                        "Invalid value for '{at}': the record set '{}' is listed twice",
                        set.label()
                    )));
                }
                sets.push(set);
            }
            Ok(sets)
        };
        if !body.is_object() {
            return Err(ApiError::required("entity.change"));
        }
        let deletions = list("deletions", false)?;
        let additions = list("additions", true)?;
        if additions.is_empty() && deletions.is_empty() {
            return Err(ApiError::required("entity.change"));
        }

        let mut rrsets = self.rrsets.clone();
        for (i, deletion) in deletions.iter().enumerate() {
            let Some(pos) = rrsets.iter().position(|r| r.key() == deletion.key()) else {
                return Err(ApiError::not_found(format!(
                    "The 'entity.change.deletions[{i}]' resource named '{}' does not exist.",
                    deletion.label()
                )));
            };
            if !rrsets[pos].matches(deletion) {
                return Err(ApiError::new(
                    412,
                    "conditionNotMet",
                    format!("Precondition not met for 'entity.change.deletions[{i}]'"),
                ));
            }
            rrsets.remove(pos);
        }
        for (i, addition) in additions.iter().enumerate() {
            if rrsets.iter().any(|r| r.key() == addition.key()) {
                return Err(ApiError::new(
                    409,
                    "alreadyExists",
                    format!(
                        "The resource 'entity.change.additions[{i}]' named '{}' already exists",
                        addition.label()
                    ),
                ));
            }
            rrsets.push(addition.clone());
        }

        self.rrsets = rrsets;
        let id = self.changes.len().to_string();
        self.changes.push(Change {
            id,
            additions,
            deletions,
            pending,
            start_time: now.into(),
        });
        Ok(self.changes.last().expect("just pushed"))
    }

    /// `rrsets.list`: every set, or those named `name` (and of type `rtype`).
    pub(super) fn list_rrsets(&self, name: Option<&str>, rtype: Option<&str>) -> Vec<&RecordSet> {
        self.rrsets
            .iter()
            .filter(|r| name.is_none_or(|n| r.name == n))
            .filter(|r| rtype.is_none_or(|t| r.rtype == t))
            .collect()
    }
}
