//! `trim-exports IN OUT [NAME...]`: copy a wasm module, leaving exports out: the named ones,
//! or by default [`UNUSED_CALLBACKS`], the proxy-wasm callbacks the edge filter does not use.
//!
//! Why: the proxy-wasm Rust SDK exports every callback of the ABI, and Envoy calls each one the
//! module exports — for an HTTP filter that is a trip into the VM per request and response
//! body chunk (every WebSocket frame, both ways), plus `proxy_on_log` and `proxy_on_done` per
//! request. The edge filter does nothing in those callbacks, and Envoy skips a callback the
//! module does not export, so `scripts/wasm.sh` (and the Dockerfile) drop them after the
//! build. `make bench` measures the difference.
//!
//! Only the export section changes (the functions stay, unreferenced). A name that is not
//! exported is an error: an SDK upgrade that renames a callback must be looked at, not
//! silently keep costing.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 || args.iter().any(|a| a == "-h" || a == "--help") {
        eprintln!(
            "usage: trim-exports IN.wasm OUT.wasm [EXPORT_NAME...]\n\
             default names: {}",
            UNUSED_CALLBACKS.join(" ")
        );
        return ExitCode::from(2);
    }
    let (input, output) = (&args[0], &args[1]);
    let names: Vec<String> = match &args[2..] {
        [] => UNUSED_CALLBACKS.iter().map(|n| n.to_string()).collect(),
        named => named.to_vec(),
    };
    let names = &names;
    let result = std::fs::read(input)
        .map_err(|e| format!("read {input}: {e}"))
        .and_then(|module| trim(&module, names))
        .and_then(|trimmed| {
            std::fs::write(output, trimmed).map_err(|e| format!("write {output}: {e}"))
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("trim-exports: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Callbacks of `EdgeFilter` that keep the SDK's default (nothing to do): the bodies and
/// trailers (the filter decides on headers alone), and the end-of-stream `log` and `done`.
/// A callback the filter starts to implement must leave this list.
const UNUSED_CALLBACKS: [&str; 6] = [
    "proxy_on_request_body",
    "proxy_on_request_trailers",
    "proxy_on_response_body",
    "proxy_on_response_trailers",
    "proxy_on_log",
    "proxy_on_done",
];

const MAGIC: &[u8] = b"\0asm";
const EXPORT_SECTION: u8 = 7;

/// The module without the named exports.
fn trim(module: &[u8], names: &[String]) -> Result<Vec<u8>, String> {
    if module.len() < 8 || &module[..4] != MAGIC {
        return Err("not a wasm module".into());
    }
    let mut out = module[..8].to_vec();
    let mut found = vec![false; names.len()];
    let mut pos = 8;
    while pos < module.len() {
        let id = module[pos];
        let (size, start) = read_u32(module, pos + 1)?;
        let end = start
            .checked_add(size as usize)
            .filter(|&e| e <= module.len())
            .ok_or("section runs past the end")?;
        let payload = &module[start..end];
        let payload = if id == EXPORT_SECTION {
            trim_exports(payload, names, &mut found)?
        } else {
            payload.to_vec()
        };
        out.push(id);
        write_u32(
            &mut out,
            u32::try_from(payload.len()).map_err(|_| "section too large")?,
        );
        out.extend_from_slice(&payload);
        pos = end;
    }
    let missing: Vec<&str> = names
        .iter()
        .zip(&found)
        .filter(|(_, f)| !**f)
        .map(|(n, _)| n.as_str())
        .collect();
    if !missing.is_empty() {
        return Err(format!("not exported: {}", missing.join(", ")));
    }
    Ok(out)
}

/// An export section (a vector of name, kind byte, index) without the named entries.
fn trim_exports(section: &[u8], names: &[String], found: &mut [bool]) -> Result<Vec<u8>, String> {
    let (count, mut pos) = read_u32(section, 0)?;
    let mut kept = Vec::new();
    let mut kept_count = 0u32;
    for _ in 0..count {
        let entry_start = pos;
        let (len, name_start) = read_u32(section, pos)?;
        let name_end = name_start + len as usize;
        let name = section
            .get(name_start..name_end)
            .ok_or("export name runs past the section")?;
        // The kind byte, then the index.
        let (_, entry_end) = read_u32(section, name_end + 1)?;
        match names.iter().position(|n| n.as_bytes() == name) {
            Some(i) => found[i] = true,
            None => {
                kept.extend_from_slice(&section[entry_start..entry_end]);
                kept_count += 1;
            }
        }
        pos = entry_end;
    }
    if pos != section.len() {
        return Err("trailing bytes in the export section".into());
    }
    let mut out = Vec::with_capacity(kept.len() + 5);
    write_u32(&mut out, kept_count);
    out.extend_from_slice(&kept);
    Ok(out)
}

/// An unsigned LEB128 `u32` at `pos`; returns it and the position after it.
fn read_u32(bytes: &[u8], mut pos: usize) -> Result<(u32, usize), String> {
    let mut value = 0u32;
    for shift in (0..35).step_by(7) {
        let byte = *bytes.get(pos).ok_or("truncated LEB128 number")?;
        pos += 1;
        value |= u32::from(byte & 0x7f)
            .checked_shl(shift)
            .ok_or("LEB128 number too large")?;
        if byte & 0x80 == 0 {
            return Ok((value, pos));
        }
    }
    Err("LEB128 number too long".into())
}

fn write_u32(out: &mut Vec<u8>, mut value: u32) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A module with a type section (kept verbatim) and three function exports.
    fn module(exports: &[&str]) -> Vec<u8> {
        let mut m = b"\0asm\x01\0\0\0".to_vec();
        m.extend_from_slice(&[1, 4, 1, 0x60, 0, 0]); // type section: one `() -> ()`
        let mut section = Vec::new();
        write_u32(&mut section, exports.len() as u32);
        for (i, name) in exports.iter().enumerate() {
            write_u32(&mut section, name.len() as u32);
            section.extend_from_slice(name.as_bytes());
            section.push(0); // function
            write_u32(&mut section, 200 + i as u32); // a two-byte LEB128 index
        }
        m.push(EXPORT_SECTION);
        write_u32(&mut m, section.len() as u32);
        m.extend_from_slice(&section);
        m
    }

    fn strings(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn drops_only_the_named_exports() {
        let all = ["proxy_on_request_headers", "proxy_on_log", "proxy_on_done"];
        let trimmed = trim(&module(&all), &strings(&["proxy_on_log", "proxy_on_done"])).unwrap();
        // The kept export was first (index 200), so this is the same module built with it alone.
        assert_eq!(trimmed, module(&["proxy_on_request_headers"]));
        assert_eq!(trim(&module(&all), &[]).unwrap(), module(&all));
    }

    #[test]
    fn a_name_that_is_not_exported_is_an_error() {
        let m = module(&["proxy_on_request_headers"]);
        let err = trim(&m, &strings(&["proxy_on_log"])).unwrap_err();
        assert!(err.contains("proxy_on_log"), "{err}");
    }

    #[test]
    fn rejects_what_is_not_a_module() {
        assert!(trim(b"not wasm at all", &strings(&["x"])).is_err());
        let mut m = module(&["a"]);
        m.truncate(m.len() - 2);
        assert!(trim(&m, &strings(&["a"])).is_err());
    }

    #[test]
    fn leb128_round_trips() {
        for v in [0, 1, 127, 128, 300, 16_384, u32::MAX] {
            let mut out = Vec::new();
            write_u32(&mut out, v);
            assert_eq!(read_u32(&out, 0).unwrap(), (v, out.len()));
        }
        assert!(read_u32(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x01], 0).is_err());
    }
}
