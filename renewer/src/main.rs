//! `renewer`: the ACME certificate renewer of acme-edge. The CLI lives in the library
//! (`renewer::cli`) so that its modules are checked with the rest of the crate.

fn main() -> std::process::ExitCode {
    renewer::cli::main()
}
