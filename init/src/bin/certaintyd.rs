//! certaintyd on any host (`certaintyd check` verifies an unpacked image);
//! on a node, /sbin/certaintyd is init under this name. See
//! [`chaos_init::certainty::command`].

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(chaos_init::certainty::command::main())
}
