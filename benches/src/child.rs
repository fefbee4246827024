//! The participant process: `busbench --role child --child-spec <JSON>`.

use std::io::{self, BufRead, Write};
use std::process::ExitCode;

use nix::sys::signal::Signal;

use crate::contenders;
use crate::error::{other, Context};
use crate::protocol::ChildSpec;
use crate::roles;
use crate::transport::ChildCtx;
use crate::util::pin_to_cpu;

/// Entry point of a participant; never panics on ordinary errors, reports
/// them on stdout as `ERROR ...` and exits 1.
pub fn child_main(spec_json: &str) -> ExitCode {
    match run(spec_json) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let msg = e.to_string().replace('\n', " ");
            let _ = emit(&format!("ERROR {msg}"));
            ExitCode::FAILURE
        }
    }
}

fn emit(line: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()
}

fn run(spec_json: &str) -> io::Result<()> {
    let spec: ChildSpec =
        serde_json::from_str(spec_json).map_err(|e| other(format!("bad --child-spec: {e}")))?;
    // Die with the coordinator, whatever happens to it, so no participant
    // spins forever on a core.
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).context("prctl(PR_SET_PDEATHSIG)")?;
    if nix::unistd::getppid().as_raw() != spec.parent_pid {
        return Err(other(
            "the coordinator exited before this participant started",
        ));
    }
    if let Some(cpu) = spec.cpu {
        pin_to_cpu(cpu)?;
    }
    // SAFETY: the coordinator cleared FD_CLOEXEC on exactly these descriptors
    // (all > 2, so not our stdio) between fork and exec and lists each once;
    // nothing else in this fresh process owns them.
    let mut ctx = unsafe { ChildCtx::from_inherited(&spec.fds, spec.info.clone())? };
    let contender = contenders::find(&spec.contender)
        .ok_or_else(|| other(format!("unknown contender {:?}", spec.contender)))?;
    let mut ep = contender
        .connect(&spec.run, spec.role, &mut ctx)
        .with_context(|| format!("{} {}: connect", spec.contender, spec.role))?;
    // Close every inherited descriptor the endpoint did not take.
    drop(ctx);

    emit("READY").context("reporting READY")?;
    let mut line = String::new();
    io::stdin()
        .lock()
        .read_line(&mut line)
        .context("waiting for GO")?;
    if line.trim() != "GO" {
        return Err(other("the coordinator aborted the run before GO"));
    }

    let report = roles::run_role(&spec.run, spec.role, &spec.timing, ep.as_mut())
        .with_context(|| format!("{} {}", spec.contender, spec.role))?;
    drop(ep);
    let json =
        serde_json::to_string(&report).map_err(|e| other(format!("encoding result: {e}")))?;
    emit(&format!("RESULT {json}")).context("reporting the result")
}
