//! `xe`: XenServer's command line, over the XenAPI.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if let Err(toolstack::cli::XeError(msg, code)) = toolstack::cli::run(&args, &mut out) {
        eprintln!("{msg}");
        std::process::exit(code);
    }
}
