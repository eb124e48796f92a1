//! How a program asks PID 1 to power the node off or reboot it: by
//! signal. PID 1 takes every signal in [`REQUESTS`] as a request; a
//! program (the console screen, the image's `reboot`) sends the one
//! [`signal_for`] names.

use libc::c_int;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Power {
    Off,
    Reboot,
}

/// What the kernel and the administrator ask of PID 1 by signal. SIGINT is
/// what the kernel sends on Ctrl-Alt-Del once that is handed to init.
pub const REQUESTS: &[(c_int, Power)] = &[
    (libc::SIGTERM, Power::Off),
    (libc::SIGUSR2, Power::Off),
    (libc::SIGINT, Power::Reboot),
    (libc::SIGUSR1, Power::Reboot),
];

pub fn request_for(signal: c_int) -> Option<Power> {
    REQUESTS
        .iter()
        .find(|(s, _)| *s == signal)
        .map(|(_, power)| *power)
}

/// The signal a program sends PID 1 to ask for `power`: the user signals,
/// as busybox's poweroff does, rather than SIGTERM and SIGINT, which stand
/// for other events.
pub fn signal_for(power: Power) -> c_int {
    match power {
        Power::Off => libc::SIGUSR2,
        Power::Reboot => libc::SIGUSR1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_map_as_pid1_rules_say() {
        let table = [
            (libc::SIGTERM, Some(Power::Off)),
            (libc::SIGUSR2, Some(Power::Off)),
            (libc::SIGINT, Some(Power::Reboot)),
            (libc::SIGUSR1, Some(Power::Reboot)),
            (libc::SIGCHLD, None),
            (libc::SIGHUP, None),
        ];
        for (signal, power) in table {
            assert_eq!(request_for(signal), power, "{signal}");
        }
        for power in [Power::Off, Power::Reboot] {
            assert_eq!(request_for(signal_for(power)), Some(power));
        }
    }
}
