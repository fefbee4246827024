//! `shmbus delete`: delete topics by name or pattern, after a confirmation.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

use bus_client::{ErrorCode, TopicStats};
use bus_proto::pattern::TopicPattern;
use clap::Args;

use crate::error::CliError;
use crate::util;

#[derive(Debug, Args)]
#[command(
    long_about = "Delete topics: each TOPIC is a topic name or a pattern (`*` matches one part of a \
name, `**` any number of parts: 'robot/**'). The topics are listed and confirmed on the terminal \
first, unless --yes; without a terminal on standard input, --yes is required.

A topic with publishers or subscribers attached is not deleted (nothing is, then) unless --force: \
its ports are then closed for them, as `Bus::delete` does (publishers see `Closed`, subscribers \
see `Closed` after reading what is left). Attached ports are counted just before deleting; a port \
that attaches in between is closed like the others."
)]
pub struct DeleteArgs {
    /// Topic names or patterns, like `robot/odom` or 'robot/**'.
    #[arg(required = true, value_name = "TOPIC")]
    topics: Vec<String>,

    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    yes: bool,

    /// Delete topics that still have publishers or subscribers, closing it for them.
    #[arg(long)]
    force: bool,
}

pub fn run(socket: &Path, args: &DeleteArgs) -> Result<(), CliError> {
    let mut patterns = Vec::with_capacity(args.topics.len());
    for t in &args.topics {
        if !t.contains('*') {
            util::check_topic(t)?;
        }
        patterns.push(TopicPattern::new(t).map_err(CliError::usage)?);
    }
    let bus = util::connect(socket)?;
    let all = bus.stats(None).map_err(|e| CliError::request(e, socket))?;

    // Every argument must name something; nothing is deleted otherwise.
    let mut chosen: Vec<&TopicStats> = Vec::new();
    for p in &patterns {
        let hits: Vec<&TopicStats> = all.iter().filter(|t| p.matches(&t.name)).collect();
        if hits.is_empty() {
            let what = if p.is_exact() {
                "no topic"
            } else {
                "no topic matches"
            };
            return Err(CliError::refused(format!(
                "{what} '{p}' on {} (or access to it is denied); nothing was deleted. `shmbus list` shows the topics",
                socket.display()
            )));
        }
        for t in hits {
            if !chosen.iter().any(|c| c.name == t.name) {
                chosen.push(t);
            }
        }
    }

    if !args.force {
        let busy: Vec<String> = chosen
            .iter()
            .filter(|t| !t.publishers.is_empty() || !t.subscribers.is_empty())
            .map(|t| describe_ports(t))
            .collect();
        if !busy.is_empty() {
            return Err(CliError::refused(format!(
                "not deleting: {}. Nothing was deleted; stop those processes first, or add --force to close the topic{} for them",
                busy.join("; "),
                if busy.len() == 1 { "" } else { "s" }
            )));
        }
    }

    if !args.yes {
        confirm(&chosen)?;
    }

    let mut failed = None;
    for t in &chosen {
        match bus.delete(&t.name) {
            Ok(()) => println!("deleted {}", t.name),
            // Deleted by someone else meanwhile: the caller's wish holds.
            Err(e) if e.code() == Some(ErrorCode::NoSuchTopic) => {
                println!("deleted {} (by someone else meanwhile)", t.name)
            }
            Err(e) => {
                let e = CliError::request(e, socket);
                eprintln!("shmbus: deleting '{}': {}", t.name, e.message);
                failed.get_or_insert(e.code);
            }
        }
    }
    match failed {
        None => Ok(()),
        Some(code) => Err(CliError {
            code,
            message: String::new(),
        }),
    }
}

/// `'t' has 1 publisher (pid 12) and 2 subscribers (pids 13, 14) attached`
fn describe_ports(t: &TopicStats) -> String {
    let part = |n: usize, what: &str, pids: Vec<u32>| -> Option<String> {
        (n > 0).then(|| {
            let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
            format!(
                "{n} {what}{} (pid{} {})",
                if n == 1 { "" } else { "s" },
                if pids.len() == 1 { "" } else { "s" },
                pids.join(", ")
            )
        })
    };
    let parts: Vec<String> = [
        part(
            t.publishers.len(),
            "publisher",
            t.publishers.iter().map(|p| p.pid).collect(),
        ),
        part(
            t.subscribers.len(),
            "subscriber",
            t.subscribers.iter().map(|s| s.pid).collect(),
        ),
    ]
    .into_iter()
    .flatten()
    .collect();
    format!("'{}' has {} attached", t.name, parts.join(" and "))
}

/// Ask on the terminal; standard input that is not a terminal cannot confirm.
fn confirm(chosen: &[&TopicStats]) -> Result<(), CliError> {
    let names: Vec<&str> = chosen.iter().map(|t| t.name.as_str()).collect();
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(CliError::usage(format!(
            "not deleting {}: standard input is not a terminal, so the deletion cannot be confirmed; add --yes to delete without asking",
            names.join(", ")
        )));
    }
    let mut err = std::io::stderr().lock();
    let _ = write!(
        err,
        "delete {} topic{}: {}? [y/N] ",
        names.len(),
        if names.len() == 1 { "" } else { "s" },
        names.join(", ")
    );
    let _ = err.flush();
    let mut answer = String::new();
    stdin
        .lock()
        .read_line(&mut answer)
        .map_err(|e| CliError::io(e, "reading the answer"))?;
    if matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
        Ok(())
    } else {
        Err(CliError::failure("not confirmed; nothing was deleted"))
    }
}
