//! Project automation (`cargo xtask ...`).
fn main() {
    eprintln!("usage: cargo xtask e2e");
    std::process::exit(2);
}
