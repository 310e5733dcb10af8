//! Prints a HOCON file as JSON: `cargo run -p clearml-hocon --example hocon2json -- FILE`.
#![allow(clippy::print_stdout, clippy::print_stderr)]

fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: hocon2json FILE");
        std::process::exit(2);
    };
    match clearml_hocon::parse_file(std::path::Path::new(&path)) {
        Ok(v) => println!(
            "{}",
            serde_json::to_string(&v.to_json()).unwrap_or_default()
        ),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
