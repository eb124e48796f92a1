//! `primes LIMIT`: counts the primes below LIMIT that fall in this task's
//! share of the range, as Slurm numbers the tasks (SLURM_PROCID of
//! SLURM_NTASKS), and prints `primes <count> in [<from>, <to>)`. Run as one
//! task per node, the counts add up to the primes below LIMIT; the sum is
//! known, so the result can be checked. Static, so that `srun --bcast` can
//! copy it to drones that carry nothing but their image.

use std::process::ExitCode;

fn main() -> ExitCode {
    let usage = "usage: primes LIMIT (a number from 2 to 10^10), one task of a Slurm job";
    let Some(limit) = std::env::args()
        .nth(1)
        .and_then(|a| a.parse::<u64>().ok())
        .filter(|l| (2..=10_000_000_000).contains(l))
    else {
        eprintln!("{usage}");
        return ExitCode::from(2);
    };
    let number = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(default)
    };
    let tasks = number("SLURM_NTASKS", 1).max(1);
    let task = number("SLURM_PROCID", 0).min(tasks - 1);
    let (from, to) = share(limit, task, tasks);
    println!("primes {} in [{from}, {to})", count(from, to));
    ExitCode::SUCCESS
}

/// Task `task` of `tasks`'s part of [0, limit).
fn share(limit: u64, task: u64, tasks: u64) -> (u64, u64) {
    let part = |t: u64| (u128::from(limit) * u128::from(t) / u128::from(tasks)) as u64;
    (part(task), part(task + 1))
}

/// The primes in [from, to): a sieve of the range by the primes up to its
/// square root, so each task needs memory for its own part only.
fn count(from: u64, to: u64) -> u64 {
    if to <= 2 {
        return 0;
    }
    let from = from.max(2);
    let root = (to as f64).sqrt() as u64 + 1;
    let mut small = vec![true; root as usize + 1];
    let mut divisors = Vec::new();
    for n in 2..=root {
        if small[n as usize] {
            divisors.push(n);
            let mut m = n * n;
            while m <= root {
                small[m as usize] = false;
                m += n;
            }
        }
    }
    let mut prime = vec![true; (to - from) as usize];
    for p in divisors {
        let mut m = (p * p).max(from.div_ceil(p) * p);
        while m < to {
            prime[(m - from) as usize] = false;
            m += p;
        }
    }
    prime.iter().filter(|&&p| p).count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_to_the_known_counts() {
        for (limit, expected) in [(10, 4), (100, 25), (1_000_000, 78_498)] {
            for tasks in [1, 2, 3, 7] {
                let total: u64 = (0..tasks)
                    .map(|t| {
                        let (from, to) = share(limit, t, tasks);
                        count(from, to)
                    })
                    .sum();
                assert_eq!(total, expected, "{limit} in {tasks} tasks");
            }
        }
    }
}
