//! `cargo run -p xtask -- tidy`: checks the dependency rules between crates.
//! The same checks run as a test (`cargo test -p xtask`).

fn main() {
    match std::env::args().nth(1).as_deref() {
        Some("tidy") => match xtask::tidy() {
            Ok(()) => println!("tidy: ok"),
            Err(errors) => {
                for e in errors {
                    eprintln!("tidy: {e}");
                }
                std::process::exit(1);
            }
        },
        _ => {
            eprintln!("usage: cargo run -p xtask -- tidy");
            std::process::exit(2);
        }
    }
}
