// SPDX-License-Identifier: GPL-2.0

//! `rgn-restore`: runs guest commands from the pristine VM state that
//! `scripts/vm --save` left in a state directory, in one QEMU that stays up
//! and goes back to that state (`loadvm`) before every command: a restore
//! costs the reload of guest memory, not a new QEMU.
//!
//! The state directory holds `state.qcow2` (the snapshot `pristine`),
//! `qemu.args` (the saved machine, one argument a line), `key` and
//! `state.sha256`. Each run works on its own copy of the image (QEMU locks
//! an image it has open, and `loadvm` needs it writable).

use std::collections::VecDeque;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

const USAGE: &str = "usage: (--help prints this)
  rgn-restore --state DIR --out DIR --flavor FLAVOR [--timeout SECS] --cmd COMMAND
      one restore running COMMAND; its output on stdout, its exit status
  rgn-restore --state DIR --out DIR --flavor FLAVOR [--timeout SECS] --lane NAME
              --specs FILE --list FILE --judge CMDLINE [--chain N]
      the cells of FILE in order, up to N (default 16) per restore, each
      restore running them until one disarms lockdep (the guest prints
      '# RETRY SPEC' for the rest, which wait for the next restore); each
      restore's guest output, judged on the host by CMDLINE (run by sh -c
      with the raw output's path as $1),
      goes to OUT/restore-NAME-K.out and its path to the list FILE
exit status: the command's (--cmd) or 0/1 (--lane: 1 if a restore died or a
first cell could not be observed armed); 125 the VM died (--cmd); 126 the
saved state is missing or does not load (marked stale: save it again; with
--lane, FILE then holds the cells still waiting)";

/// The VM died: panic, oops, hang, or an exit without a result.
const VM_FAILED: u8 = 125;
/// The saved state cannot be used.
const STATE_UNUSABLE: u8 = 126;
/// Most bytes a command may print (a matrix chain prints about 30 KB).
const MAX_OUTPUT: usize = 64 << 20;
/// The name of the snapshot `scripts/vm --save` takes.
const SNAPSHOT: &str = "pristine";

enum Failure {
    /// The saved state is missing, corrupt or does not load.
    Unusable(String),
    /// This restore's guest died; the next restore starts a new QEMU.
    Died(String),
}

struct Options {
    state: PathBuf,
    out: PathBuf,
    flavor: String,
    timeout: Duration,
}

/// A command that gave no "RGN-EXIT": what the guest printed, and why
/// ("hung", "exited" or an I/O error).
type NoExit = (Vec<u8>, String);

/// One QEMU with the saved machine, paused until a restore.
struct Vm {
    child: Child,
    qmp: BufReader<UnixStream>,
    serial: UnixStream,
    console: PathBuf,
    /// How much of the console log earlier restores took.
    console_read: u64,
    /// This QEMU's copy of the state image, removed with it.
    image: PathBuf,
    sockets: PathBuf,
    pending: Vec<u8>,
}

fn connect(path: &Path, child: &mut Child) -> Result<UnixStream, String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match UnixStream::connect(path) {
            Ok(s) => return Ok(s),
            Err(e) => {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!(
                        "QEMU exited ({status}) before {} opened",
                        path.display()
                    ));
                }
                if Instant::now() > deadline {
                    return Err(format!("cannot connect to {}: {e}", path.display()));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

impl Vm {
    /// Starts QEMU paused, with the machine of `state/qemu.args` and a copy
    /// of the state image, in the directory `dir`.
    fn start(opts: &Options, dir: &Path) -> Result<Vm, Failure> {
        let args = fs::read_to_string(opts.state.join("qemu.args"))
            .map_err(|e| Failure::Unusable(format!("no qemu.args: {e}")))?;
        fs::create_dir_all(dir)
            .map_err(|e| Failure::Died(format!("cannot create {}: {e}", dir.display())))?;
        let image = dir.join("state.qcow2");
        fs::copy(opts.state.join("state.qcow2"), &image).map_err(|e| {
            let _ = fs::remove_file(&image);
            Failure::Died(format!(
                "cannot copy state.qcow2 to {}: {e}",
                image.display()
            ))
        })?;
        // Sockets in a short directory of their own: a Unix socket's path
        // holds at most 107 bytes, less than a deep run directory may need.
        let sockets = std::env::temp_dir().join(format!(
            "rgn-{}-{}",
            std::process::id(),
            dir.file_name().and_then(|n| n.to_str()).unwrap_or("vm")
        ));
        let _ = fs::remove_dir_all(&sockets);
        fs::create_dir_all(&sockets)
            .map_err(|e| Failure::Died(format!("cannot create {}: {e}", sockets.display())))?;
        let console = dir.join("console.log");
        let mut child = spawn_qemu(&args, dir, &image, &sockets, &console)?;
        let started = (|| {
            let qmp = connect(&sockets.join("qmp"), &mut child)?;
            let serial = connect(&sockets.join("serial"), &mut child)?;
            Ok::<_, String>((qmp, serial))
        })();
        let (qmp, serial) = match started {
            Ok(s) => s,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                let qemu_err = fs::read_to_string(dir.join("qemu.err")).unwrap_or_default();
                // QEMU refuses an image it cannot open: the state is bad.
                if qemu_err.contains("state.qcow2") {
                    return Err(Failure::Unusable(first_line(&qemu_err)));
                }
                return Err(Failure::Died(format!("{e}: {}", first_line(&qemu_err))));
            }
        };
        let mut vm = Vm {
            child,
            qmp: BufReader::new(qmp),
            serial,
            console,
            console_read: 0,
            image,
            sockets,
            pending: Vec::new(),
        };
        vm.greet()?;
        Ok(vm)
    }

    /// Sets the sockets' timeouts, reads QMP's greeting and leaves its
    /// capabilities negotiation mode.
    fn greet(&mut self) -> Result<(), Failure> {
        self.serial
            .set_read_timeout(Some(Duration::from_millis(200)))
            .map_err(|e| Failure::Died(format!("serial socket: {e}")))?;
        self.qmp
            .get_ref()
            .set_read_timeout(Some(Duration::from_secs(60)))
            .map_err(|e| Failure::Died(format!("QMP socket: {e}")))?;
        let mut greeting = String::new();
        self.qmp
            .read_line(&mut greeting)
            .map_err(|e| Failure::Died(format!("no QMP greeting: {e}")))?;
        self.qmp_command("qmp_capabilities", None)
            .map_err(Failure::Died)?;
        Ok(())
    }

    /// One QMP command; its "return" value, or the error's description.
    fn qmp_command(
        &mut self,
        cmd: &str,
        args: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, String> {
        let mut msg = serde_json::json!({ "execute": cmd });
        if let Some(a) = args {
            msg["arguments"] = a;
        }
        let line = format!("{msg}\n");
        self.qmp
            .get_mut()
            .write_all(line.as_bytes())
            .map_err(|e| format!("QMP {cmd}: {e}"))?;
        loop {
            let mut reply = String::new();
            let n = self
                .qmp
                .read_line(&mut reply)
                .map_err(|e| format!("QMP {cmd}: {e}"))?;
            if n == 0 {
                return Err(format!("QMP {cmd}: QEMU closed the monitor"));
            }
            let v: serde_json::Value =
                serde_json::from_str(&reply).map_err(|e| format!("QMP {cmd}: {e}: {reply}"))?;
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = v.get("error") {
                return Err(format!("QMP {cmd}: {}", e["desc"]));
            }
            // An event: wait for the reply.
        }
    }

    /// Back to the saved state, running.
    fn restore(&mut self) -> Result<(), Failure> {
        let out = self
            .qmp_command(
                "human-monitor-command",
                Some(serde_json::json!({ "command-line": format!("loadvm {SNAPSHOT}") })),
            )
            .map_err(Failure::Died)?;
        // HMP reports a failed loadvm as text.
        let text = out.as_str().unwrap_or_default().trim();
        if !text.is_empty() {
            return Err(Failure::Unusable(first_line(text)));
        }
        let status = self
            .qmp_command("query-status", None)
            .map_err(Failure::Died)?;
        if status["running"] != serde_json::Value::Bool(true) {
            self.qmp_command("cont", None).map_err(Failure::Died)?;
        }
        Ok(())
    }

    /// How many translation blocks TCG holds (HMP `info jit`). `loadvm`
    /// flushes them all (QEMU's `cpu_common_post_load()`), so after a
    /// command this is the code the restore translated again.
    fn translation_blocks(&mut self) -> Option<u64> {
        let out = self
            .qmp_command(
                "human-monitor-command",
                Some(serde_json::json!({ "command-line": "info jit" })),
            )
            .ok()?;
        out.as_str()?
            .lines()
            .find_map(|l| l.trim().strip_prefix("TB count")?.trim().parse().ok())
    }

    /// The console log since the last call (what a restore printed,
    /// including what came after its RGN-EXIT, while the host judged).
    fn take_console(&mut self) -> String {
        let bytes = fs::read(&self.console).unwrap_or_default();
        let start = (self.console_read as usize).min(bytes.len());
        self.console_read = bytes.len() as u64;
        String::from_utf8_lossy(&bytes[start..]).replace('\r', "")
    }

    /// Sends COMMAND and reads the guest's output up to "RGN-EXIT <status>";
    /// the output and the status, or why there is none.
    fn run(&mut self, command: &str, timeout: Duration) -> Result<(Vec<u8>, u8), NoExit> {
        self.pending.clear();
        if let Err(e) = self.serial.write_all(format!("{command}\n").as_bytes()) {
            return Err((Vec::new(), format!("cannot send the command: {e}")));
        }
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 65536];
        loop {
            if let Some(status) = exit_status(&self.pending) {
                let end = self.pending.len() - status.1;
                let out = self.pending[..end].to_vec();
                return Ok((out, status.0));
            }
            // Checked on every pass: a guest that keeps printing must not
            // outlive its timeout either.
            if Instant::now() > deadline {
                return Err((std::mem::take(&mut self.pending), "hung".into()));
            }
            if self.pending.len() > MAX_OUTPUT {
                return Err((
                    std::mem::take(&mut self.pending),
                    format!("the guest printed more than {MAX_OUTPUT} bytes without exiting"),
                ));
            }
            match self.serial.read(&mut buf) {
                Ok(0) => return Err((std::mem::take(&mut self.pending), "exited".into())),
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    if let Ok(Some(_)) = self.child.try_wait() {
                        return Err((std::mem::take(&mut self.pending), "exited".into()));
                    }
                }
                Err(e) => return Err((std::mem::take(&mut self.pending), format!("serial: {e}"))),
            }
        }
    }

    fn stop(mut self) {
        let _ = self.qmp_command("quit", None);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Vm {
    /// No QEMU outlives its runner, whatever the way out (an error, a
    /// panic): a no-op once it has exited.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = fs::remove_file(&self.image);
        let _ = fs::remove_dir_all(&self.sockets);
    }
}

/// The status of a final "RGN-EXIT <status>\n" of OUTPUT, and the length
/// of that marker.
fn exit_status(output: &[u8]) -> Option<(u8, usize)> {
    let text = output.strip_suffix(b"\n")?;
    let start = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let line = std::str::from_utf8(&text[start..])
        .ok()?
        .trim_end_matches('\r');
    // Output without a final newline runs into the marker's line.
    let at = line.rfind("RGN-EXIT ")?;
    let status = line[at + "RGN-EXIT ".len()..].parse().ok()?;
    Some((status, output.len() - start - at))
}

fn first_line(s: &str) -> String {
    s.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_string()
}

/// Why a restore gave no result, from its kernel log (as scripts/vm
/// names a dead boot).
fn diagnose(flavor: &str, why: &str, console: &str, timeout: Duration, log: &Path) -> String {
    if console.contains("Kernel panic - not syncing") {
        let oops = console
            .lines()
            .any(|l| l.contains("] Oops:") || l.contains("] BUG: unable to handle"));
        let what = if oops {
            "oops (ended in a panic)"
        } else {
            "panic"
        };
        return format!(
            "[{flavor}] the guest kernel died: {what}; kernel log in {}",
            log.display()
        );
    }
    match why {
        "hung" => format!(
            "[{flavor}] the guest hung: no exit after {} s (kernel log in {})",
            timeout.as_secs(),
            log.display()
        ),
        "exited" => format!(
            "[{flavor}] the VM exited without the guest reporting a result; kernel log in {}",
            log.display()
        ),
        other => format!("[{flavor}] {other}; kernel log in {}", log.display()),
    }
}

/// What one restore produced.
struct Restore {
    output: Vec<u8>,
    status: u8,
}

/// Runs restores, starting a QEMU when there is none (first use, or the
/// last one died).
struct Runner {
    opts: Options,
    /// Names this runner's QEMU directories (`OUT/qemu-NAME-K`): lanes
    /// share OUT.
    name: String,
    vm: Option<Vm>,
    vms: u32,
    /// What the last restore printed before it died (the cells it ran).
    partial: Vec<u8>,
    /// QEMUs found dead after their command had answered: each, why.
    deaths: Vec<String>,
}

impl Runner {
    /// A runner for a state that `check_state` accepted.
    fn new(opts: Options, name: &str) -> Runner {
        Runner {
            opts,
            name: name.to_string(),
            vm: None,
            vms: 0,
            partial: Vec::new(),
            deaths: Vec::new(),
        }
    }

    /// One restore running COMMAND; its run directory DIR gets the guest's
    /// output (guest.log) and kernel log (console.log). A QEMU that fails
    /// before the command was sent (it died after the previous one, or did
    /// not start) is replaced once: the command is not to blame.
    fn restore(&mut self, command: &str, dir: &Path) -> Result<Restore, Failure> {
        fs::create_dir_all(dir)
            .map_err(|e| Failure::Died(format!("cannot create {}: {e}", dir.display())))?;
        let t0 = self.load(dir)?;
        let t_loaded = t0.elapsed();
        let vm = self.vm.as_mut().expect("restored above");
        let result = vm.run(command, self.opts.timeout);
        if std::env::var_os("RGN_RESTORE_TRACE").is_some() {
            let took = t0.elapsed() - t_loaded;
            eprintln!(
                "rgn-restore: trace: loadvm {:.3} s, command to RGN-EXIT {:.3} s, {} translation blocks",
                t_loaded.as_secs_f64(),
                took.as_secs_f64(),
                vm.translation_blocks()
                    .map_or_else(|| "?".to_string(), |n| n.to_string())
            );
        }
        let console = vm.take_console();
        let _ = fs::write(dir.join("console.log"), &console);
        match result {
            Ok((output, status)) => {
                let _ = fs::write(dir.join("guest.log"), &output);
                Ok(Restore { output, status })
            }
            Err((output, why)) => {
                let _ = fs::write(dir.join("guest.log"), &output);
                self.partial = output;
                if let Some(vm) = self.vm.take() {
                    vm.kill();
                }
                Err(Failure::Died(diagnose(
                    &self.opts.flavor,
                    &why,
                    &console,
                    self.opts.timeout,
                    &dir.join("console.log"),
                )))
            }
        }
    }

    /// Loads the saved state into a QEMU, started if there is none; one
    /// that fails before the command was sent is replaced once. Returns
    /// when the load began.
    fn load(&mut self, dir: &Path) -> Result<Instant, Failure> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            if self.vm.is_none() {
                self.vms += 1;
                let vm_dir = self
                    .opts
                    .out
                    .join(format!("qemu-{}-{}", self.name, self.vms));
                match Vm::start(&self.opts, &vm_dir) {
                    Ok(vm) => self.vm = Some(vm),
                    Err(Failure::Died(why)) if attempt == 1 => {
                        eprintln!(
                            "rgn-restore: [{}] QEMU did not start ({why}); once more",
                            self.opts.flavor
                        );
                        continue;
                    }
                    Err(f) => return Err(self.failed_before(f, dir)),
                }
            }
            let vm = self.vm.as_mut().expect("started above");
            let t0 = Instant::now();
            match vm.restore() {
                Ok(()) => return Ok(t0),
                Err(Failure::Died(why)) if attempt == 1 => {
                    // It died after the previous command answered (a
                    // late oops, say): that restore's failure, not this
                    // command's, recorded for the caller.
                    let log = dir.join("console-before.log");
                    if let Some(mut vm) = self.vm.take() {
                        let _ = fs::write(&log, vm.take_console());
                        vm.kill();
                    }
                    self.deaths.push(format!(
                        "the VM died after its previous command had answered ({why}); its kernel log from then: {}",
                        log.display()
                    ));
                }
                Err(f) => return Err(self.failed_before(f, dir)),
            }
        }
    }

    /// F, after no command ran: the QEMU is dropped, and DIR gets what its
    /// console printed.
    fn failed_before(&mut self, f: Failure, dir: &Path) -> Failure {
        if let Some(mut vm) = self.vm.take() {
            let _ = fs::write(dir.join("console.log"), vm.take_console());
            vm.kill();
        }
        f
    }

    fn finish(&mut self) {
        if let Some(mut vm) = self.vm.take() {
            if let Ok(Some(status)) = vm.child.try_wait() {
                self.deaths.push(format!(
                    "the VM died ({status}) after the last command had answered; kernel log: {}",
                    vm.console.display()
                ));
                let _ = vm.take_console();
            }
            vm.stop();
        }
    }
}

/// The state directory holds a complete save whose image is the one that
/// was saved, on the machine that was saved (their checksum).
fn check_state(state: &Path) -> Result<(), Failure> {
    let missing = |f: &str| !state.join(f).is_file();
    if ["key", "state.qcow2", "qemu.args", "state.sha256"]
        .iter()
        .any(|f| missing(f))
    {
        return Err(Failure::Unusable("no complete saved state".into()));
    }
    let want = fs::read_to_string(state.join("state.sha256")).unwrap_or_default();
    // The image and the machine it was saved from, as scripts/vm hashes
    // them.
    let out = Command::new("sh")
        .arg("-c")
        .arg("cat \"$1/state.qcow2\" \"$1/qemu.args\" | sha256sum")
        .arg("sha")
        .arg(state)
        .output()
        .map_err(|e| Failure::Unusable(format!("sha256sum: {e}")))?;
    let got = String::from_utf8_lossy(&out.stdout);
    let (want, got) = (
        want.split_whitespace().next(),
        got.split_whitespace().next(),
    );
    if want.is_none() || want != got {
        return Err(Failure::Unusable(
            "state.qcow2 and qemu.args are not what was saved (checksum)".into(),
        ));
    }
    Ok(())
}

/// Marks the state stale (scripts/vm --save then saves it again) and says so.
fn unusable(opts: &Options, why: &str) -> ExitCode {
    let _ = fs::remove_file(opts.state.join("key"));
    eprintln!(
        "rgn-restore: error: [{}] the saved state in {} does not load ({why}): marked stale, save it again",
        opts.flavor,
        opts.state.display()
    );
    ExitCode::from(STATE_UNUSABLE)
}

fn run_command(opts: Options, command: &str) -> ExitCode {
    let t0 = Instant::now();
    let out = opts.out.clone();
    let flavor = opts.flavor.clone();
    if let Err(Failure::Unusable(why) | Failure::Died(why)) = check_state(&opts.state) {
        return unusable(&opts, &why);
    }
    let mut runner = Runner::new(opts, "cmd");
    let result = runner.restore(command, &out);
    runner.finish();
    match result {
        Ok(r) => {
            let text = String::from_utf8_lossy(&r.output).replace('\r', "");
            print!("{text}");
            let _ = std::io::stdout().flush();
            let status = r.status;
            eprintln!(
                "rgn-restore: [{flavor}] guest exited with status {status} after {:.1} s; kernel log in {}",
                t0.elapsed().as_secs_f64(),
                out.join("console.log").display()
            );
            ExitCode::from(status)
        }
        Err(Failure::Unusable(why)) => unusable(&runner.opts, &why),
        Err(Failure::Died(why)) => {
            eprintln!("rgn-restore: error: {why}");
            ExitCode::from(VM_FAILED)
        }
    }
}

/// The guest command that runs SPECS in order until one disarms lockdep
/// (`chain`, which the saved guest defined from selftests/cells.sh).
fn chain_command(specs: &[String]) -> String {
    let mut cmd = String::from("chain");
    for s in specs {
        cmd.push_str(" '");
        cmd.push_str(s);
        cmd.push('\'');
    }
    cmd
}

struct Lane {
    name: String,
    specs: PathBuf,
    list: PathBuf,
    judge: String,
    chain: usize,
}

fn append_line(path: &Path, line: &str) -> std::io::Result<()> {
    let mut f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    writeln!(f, "{line}")
}

/// Judges a restore's raw guest output on the host: `sh -c JUDGE judge RAW`
/// (JUDGE names the file as `$1`).
fn judge(cmdline: &str, raw: &Path, out: &Path) -> Result<String, String> {
    let result = Command::new("sh")
        .arg("-c")
        .arg(cmdline)
        .arg("judge")
        .arg(raw)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run the judge: {e}"))?;
    let text = String::from_utf8_lossy(&result.stdout).into_owned();
    fs::write(out, &text).map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    Ok(text)
}

/// How many cells of a chain's raw output ran (a "# CELL" line each) or
/// were refused by the module (run.sh's failure line): the chain runs its
/// cells in order, so these are its first ones.
fn cells_done(raw: &str) -> usize {
    raw.lines()
        .take_while(|l| *l != "RGN-DMESG")
        .filter(|l| {
            l.starts_with("# CELL ")
                || (l.starts_with("not ok ") && l.contains(": the module refused it ("))
        })
        .count()
}

/// Whether the first cell of a chain's raw output started with lockdep
/// armed (its "# CELL" line says `lockdep_before=1`).
fn first_cell_armed(raw: &str) -> bool {
    raw.lines()
        .find(|l| l.starts_with("# CELL "))
        .is_some_and(|l| l.contains(" lockdep_before=1 "))
}

/// Times a first cell may be put back for a reason other than lockdep
/// (it left its CPU, woke kswapd, was not settled) before it fails.
const FIRST_CELL_RETRIES: u32 = 2;

fn run_lane(opts: Options, lane: Lane) -> ExitCode {
    let t0 = Instant::now();
    let text = match fs::read_to_string(&lane.specs) {
        Ok(t) => t,
        Err(e) => {
            eprintln!(
                "rgn-restore: error: cannot read {}: {e}",
                lane.specs.display()
            );
            return ExitCode::from(2);
        }
    };
    if let Err(Failure::Unusable(why) | Failure::Died(why)) = check_state(&opts.state) {
        return unusable(&opts, &why);
    }
    let mut run = LaneRun {
        out: opts.out.clone(),
        flavor: opts.flavor.clone(),
        lane: &lane,
        queue: text
            .lines()
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect(),
        put_back: std::collections::HashMap::new(),
        failed: false,
    };
    let mut runner = Runner::new(opts, &lane.name);
    run.refuse_quoted();
    let (mut n, mut last) = (0, String::new());
    while !run.queue.is_empty() {
        n += 1;
        let name = format!("{}-{n}", lane.name);
        let take = lane.chain.min(run.queue.len());
        let chain: Vec<String> = run.queue.drain(..take).collect();
        let _ = fs::write(
            run.out.join(format!("restore-{name}.specs")),
            chain.join("\n") + "\n",
        );
        let dir = run.out.join(format!("vm-restore-{name}"));
        let result = runner.restore(&chain_command(&chain), &dir);
        // The QEMU of the previous restore died after it answered.
        run.failed |= record_deaths(&mut runner, &run.out, &run.flavor, &last, &lane.list);
        last = name.clone();
        match result {
            Ok(r) => run.answered(&name, &chain, &r, &dir),
            Err(Failure::Died(why)) => run.died(&mut runner, &name, chain, &why, &dir),
            Err(Failure::Unusable(why)) => {
                requeue(&mut run.queue, chain.into_iter());
                let rest: Vec<String> = run.queue.into_iter().collect();
                let _ = fs::write(
                    &lane.specs,
                    rest.join("\n") + if rest.is_empty() { "" } else { "\n" },
                );
                runner.finish();
                return unusable(&runner.opts, &why);
            }
        }
    }
    runner.finish();
    run.failed |= record_deaths(&mut runner, &run.out, &run.flavor, &last, &lane.list);
    let _ = fs::write(&lane.specs, "");
    eprintln!(
        "rgn-restore: [{}] lane {}: {n} restores in {:.1} s ({} QEMU started)",
        run.flavor,
        lane.name,
        t0.elapsed().as_secs_f64(),
        runner.vms
    );
    ExitCode::from(u8::from(run.failed))
}

/// One lane's run: the cells waiting, and whether any failed.
struct LaneRun<'a> {
    out: PathBuf,
    flavor: String,
    lane: &'a Lane,
    queue: VecDeque<String>,
    /// How often each first cell of a chain went back behind the next.
    put_back: std::collections::HashMap<String, u32>,
    failed: bool,
}

impl LaneRun<'_> {
    /// Fails `cells` of restore `name` by name (`fail_cells`).
    fn fail(&mut self, name: &str, cells: &[String], why: &str, dir: &Path) {
        self.failed = true;
        fail_cells(
            &self.out,
            name,
            &self.flavor,
            cells,
            why,
            dir,
            &self.lane.list,
        );
    }

    /// A spec travels in single quotes on the guest's command line: one
    /// with a quote fails before any restore.
    fn refuse_quoted(&mut self) {
        let (quoted, rest): (Vec<String>, Vec<String>) =
            self.queue.drain(..).partition(|c| c.contains('\''));
        self.queue.extend(rest);
        if !quoted.is_empty() {
            let dir = self.out.join(format!("vm-restore-{}-0", self.lane.name));
            let name = format!("{}-0", self.lane.name);
            self.fail(&name, &quoted, "has a quote: it cannot be sent", &dir);
        }
    }

    /// A chain the guest answered: judged, its lost cells failed, the
    /// cells to run again back in the queue in the chain's order.
    fn answered(&mut self, name: &str, chain: &[String], r: &Restore, dir: &Path) {
        let raw = self.out.join(format!("restore-{name}.raw"));
        let judged = self.out.join(format!("restore-{name}.out"));
        let raw_text = String::from_utf8_lossy(&r.output).replace('\r', "");
        let _ = fs::write(&raw, &raw_text);
        let text = judge(&self.lane.judge, &raw, &judged).unwrap_or_else(|e| {
            eprintln!("rgn-restore: error: [{}] {e}", self.flavor);
            String::new()
        });
        let _ = append_line(&self.lane.list, &judged.display().to_string());
        if r.status != 0 || text.is_empty() {
            eprintln!(
                "rgn-restore: error: [{}] restore {name}: the chain exited with status {} and its judge printed {} bytes; see {}",
                self.flavor,
                r.status,
                text.len(),
                dir.display()
            );
            self.failed = true;
        }
        let (mut waiting, judge_retries) = retries(&text, &raw_text);
        // Cells the guest neither ran nor left waiting were lost (a chain
        // cut short): they fail by name.
        let done = cells_done(&raw_text).min(chain.len());
        let lost: Vec<String> = chain[done..]
            .iter()
            .filter(|c| !waiting.contains(c))
            .cloned()
            .collect();
        if !lost.is_empty() {
            self.fail(name, &lost, "was cut short", dir);
        }
        let first_again = judge_retries.contains(&chain[0])
            && self.first_cell_again(name, chain, &raw_text, &mut waiting, (&judged, dir));
        // Back to the queue in the chain's order (the case order).
        let mut requeued = Vec::new();
        for c in chain {
            if let Some(i) = waiting.iter().position(|w| w == c) {
                requeued.push(waiting.remove(i));
            }
        }
        requeue(&mut self.queue, requeued.into_iter());
        if first_again {
            let at = 1.min(self.queue.len());
            self.queue.insert(at, chain[0].clone());
        }
    }

    /// A chain's first cell that the judge sent back. A pristine state
    /// observes its first cell armed; a first cell that must run again for
    /// another reason goes back behind the next cell (true), a few times at
    /// most: either way the lane cannot loop.
    fn first_cell_again(
        &mut self,
        name: &str,
        chain: &[String],
        raw_text: &str,
        waiting: &mut Vec<String>,
        (judged, dir): (&Path, &Path),
    ) -> bool {
        let tries = self.put_back.entry(chain[0].clone()).or_insert(0);
        *tries += 1;
        let why = if !first_cell_armed(raw_text) {
            Some("was not observed armed")
        } else if *tries > FIRST_CELL_RETRIES {
            Some("was not settled in three restores")
        } else {
            None
        };
        if let Some(i) = waiting.iter().rposition(|c| *c == chain[0]) {
            waiting.remove(i);
        }
        let Some(why) = why else {
            return true;
        };
        eprintln!(
            "rgn-restore: error: [{}] '{}' {why} even from the saved state; see {}",
            self.flavor,
            chain[0],
            judged.display()
        );
        self.fail(name, &chain[..1], why, dir);
        false
    }

    /// The guest died in a chain: the cells before the one that was
    /// running ran fine but went unjudged, and run again; that one fails.
    fn died(&mut self, runner: &mut Runner, name: &str, chain: Vec<String>, why: &str, dir: &Path) {
        eprintln!("rgn-restore: error: {why}");
        let partial = String::from_utf8_lossy(&runner.partial).replace('\r', "");
        let culprit = cells_done(&partial).min(chain.len() - 1);
        runner.partial.clear();
        self.fail(
            name,
            &chain[culprit..=culprit],
            "was running when the guest died",
            dir,
        );
        let mut others = chain;
        others.remove(culprit);
        requeue(&mut self.queue, others.into_iter());
    }
}

/// The cells of a judged chain to run again (its "# RETRY" lines: the
/// guest's own, for cells the chain did not reach, then the judge's, for
/// cells that ran but must run again), and the judge's alone.
fn retries(judged: &str, raw: &str) -> (Vec<String>, Vec<String>) {
    let waiting: Vec<String> = judged
        .lines()
        .filter_map(|l| l.strip_prefix("# RETRY "))
        .map(String::from)
        .collect();
    let mut judge_retries = waiting.clone();
    for skipped in raw
        .lines()
        .take_while(|l| *l != "RGN-DMESG")
        .filter_map(|l| l.strip_prefix("# RETRY "))
    {
        if let Some(i) = judge_retries.iter().position(|c| c == skipped) {
            judge_retries.remove(i);
        }
    }
    (waiting, judge_retries)
}

/// Starts QEMU paused (`-S`) with the saved state's arguments, the copy of
/// its image, a QMP socket and the guest's two serial ports: the console
/// to a file, the command port to a socket. QEMU itself, not under
/// timeout(1): killing the child must kill QEMU (the command timeout is
/// this program's).
fn spawn_qemu(
    args: &str,
    dir: &Path,
    image: &Path,
    sockets: &Path,
    console: &Path,
) -> Result<std::process::Child, Failure> {
    let err = fs::File::create(dir.join("qemu.err"))
        .map_err(|e| Failure::Died(format!("cannot create qemu.err: {e}")))?;
    Command::new("qemu-system-x86_64")
        .args(args.lines().filter(|l| !l.is_empty()))
        .arg("-S")
        .arg("-drive")
        .arg(format!(
            "if=none,id=rgnstate,format=qcow2,file={}",
            image.display()
        ))
        .arg("-qmp")
        .arg(format!(
            "unix:{},server=on,wait=off",
            sockets.join("qmp").display()
        ))
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .arg("-chardev")
        .arg(format!(
            "socket,id=rgn,path={},server=on,wait=off",
            sockets.join("serial").display()
        ))
        .arg("-serial")
        .arg("chardev:rgn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .map_err(|e| Failure::Died(format!("cannot run qemu-system-x86_64: {e}")))
}

/// Fails restore LAST for each QEMU the runner found dead after LAST had
/// answered (OUT/restore-LAST-died.failed, on the list); whether any was.
fn record_deaths(runner: &mut Runner, out: &Path, flavor: &str, last: &str, list: &Path) -> bool {
    let deaths: Vec<String> = runner.deaths.drain(..).collect();
    for death in &deaths {
        eprintln!("rgn-restore: error: [{flavor}] restore {last}: {death}");
        let failed_file = out.join(format!("restore-{last}-died.failed"));
        let _ = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&failed_file)
            .and_then(|mut f| writeln!(f, "not ok 0 {flavor}: restore {last}: {death}"));
        let _ = append_line(list, &failed_file.display().to_string());
    }
    !deaths.is_empty()
}

/// Puts CELLS back at the front of the queue, in their order.
fn requeue(queue: &mut VecDeque<String>, cells: impl DoubleEndedIterator<Item = String>) {
    for c in cells.rev() {
        queue.push_front(c);
    }
}

/// Records that SPECS failed in restore NAME, each "WHAT from the saved
/// state": a KTAP failure a cell, in OUT/restore-NAME.failed.
fn fail_cells(
    out: &Path,
    name: &str,
    flavor: &str,
    specs: &[String],
    what: &str,
    dir: &Path,
    list: &Path,
) {
    let failed = out.join(format!("restore-{name}.failed"));
    let text: String = specs
        .iter()
        .map(|spec| {
            format!(
                "not ok 0 {flavor}: '{spec}' {what} from the saved state (see {})\n",
                dir.display()
            )
        })
        .collect();
    let first = !failed.exists();
    let _ = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&failed)
        .and_then(|mut f| f.write_all(text.as_bytes()));
    if first {
        let _ = append_line(list, &failed.display().to_string());
    }
}

/// The command line, parsed with lexopt: an unknown option or a missing
/// value is an error that names it.
#[derive(Default)]
struct Cli {
    state: Option<PathBuf>,
    out: Option<PathBuf>,
    flavor: Option<String>,
    timeout: Option<u64>,
    cmd: Option<String>,
    chain: Option<usize>,
    lane: Option<String>,
    specs: Option<PathBuf>,
    list: Option<PathBuf>,
    judge: Option<String>,
}

/// `Ok(None)` when `--help` was asked.
fn parse_cli() -> Result<Option<Cli>, String> {
    use lexopt::prelude::*;
    let mut cli = Cli::default();
    let mut p = lexopt::Parser::from_env();
    let text = |p: &mut lexopt::Parser| -> Result<String, String> {
        p.value()
            .map_err(|e| e.to_string())?
            .string()
            .map_err(|e| e.to_string())
    };
    while let Some(arg) = p.next().map_err(|e| e.to_string())? {
        match arg {
            Long("help") | Short('h') => return Ok(None),
            Long("state") => cli.state = Some(text(&mut p)?.into()),
            Long("out") => cli.out = Some(text(&mut p)?.into()),
            Long("flavor") => cli.flavor = Some(text(&mut p)?),
            Long("timeout") => {
                let t = text(&mut p)?;
                cli.timeout = Some(
                    t.parse()
                        .map_err(|_| format!("--timeout takes whole seconds, not '{t}'"))?,
                );
            }
            Long("cmd") => cli.cmd = Some(text(&mut p)?),
            Long("chain") => {
                let c = text(&mut p)?;
                cli.chain = Some(c.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                    format!("--chain takes a number of cells, at least 1, not '{c}'")
                })?);
            }
            Long("lane") => cli.lane = Some(text(&mut p)?),
            Long("specs") => cli.specs = Some(text(&mut p)?.into()),
            Long("list") => cli.list = Some(text(&mut p)?.into()),
            Long("judge") => cli.judge = Some(text(&mut p)?),
            _ => return Err(arg.unexpected().to_string()),
        }
    }
    Ok(Some(cli))
}

fn usage_error(e: &str) -> ExitCode {
    eprintln!("rgn-restore: error: {e}\n{USAGE}");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let cli = match parse_cli() {
        Ok(Some(cli)) => cli,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => return usage_error(&e),
    };
    let (Some(state), Some(out), Some(flavor)) = (cli.state, cli.out, cli.flavor) else {
        return usage_error("--state, --out and --flavor are required");
    };
    if let Err(e) = fs::create_dir_all(&out) {
        eprintln!("rgn-restore: error: cannot create {}: {e}", out.display());
        return ExitCode::from(2);
    }
    let opts = Options {
        state,
        out,
        flavor,
        timeout: Duration::from_secs(cli.timeout.unwrap_or(120)),
    };
    let lane = (cli.lane, cli.specs, cli.list, cli.judge);
    match (cli.cmd, lane) {
        (Some(cmd), (None, None, None, None)) if cli.chain.is_none() => run_command(opts, &cmd),
        (None, (Some(name), Some(specs), Some(list), Some(judge))) => run_lane(
            opts,
            Lane {
                name,
                specs,
                list,
                judge,
                chain: cli.chain.unwrap_or(16),
            },
        ),
        _ => usage_error("give either --cmd, or --lane with --specs, --list and --judge"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_marker_is_found_at_the_end_only() {
        assert_eq!(exit_status(b"out\nRGN-EXIT 0\n"), Some((0, 11)));
        assert_eq!(exit_status(b"RGN-EXIT 3\n"), Some((3, 11)));
        // Output without a final newline runs into the marker's line.
        assert_eq!(exit_status(b"xRGN-EXIT 125\n"), Some((125, 13)));
        // Not yet complete, or not at the end: the command still runs.
        assert_eq!(exit_status(b"RGN-EXIT 0"), None);
        assert_eq!(exit_status(b"RGN-EXIT 0\nmore\n"), None);
        assert_eq!(exit_status(b"RGN-EXIT x\n"), None);
        assert_eq!(exit_status(b""), None);
    }

    #[test]
    fn chain_command_quotes_each_spec() {
        let specs = vec![
            "ctx=process alloc=get_free_page gfp=GFP_ATOMIC".to_string(),
            "control=empty".to_string(),
        ];
        assert_eq!(
            chain_command(&specs),
            "chain 'ctx=process alloc=get_free_page gfp=GFP_ATOMIC' 'control=empty'"
        );
    }
}

#[cfg(test)]
mod chain_tests {
    use super::*;

    const RAW: &str = "# phase chain at 3.1
# CASE ctx=a
# CASE ctx=b
# CASE ctx=c
# CELL cell=1 kernel_alloc=1 kind=alloc ctx=a lockdep_before=1 lockdep_after=0 x=1
# RESULT kind=alloc ctx=a
not ok 0 lockdep: cell ctx=b: the module refused it (Cannot allocate memory)
# RETRY ctx=c
# chain end at 3.4
RGN-DMESG
[    3.2] # CELL cell=9 from the kernel log does not count
";

    #[test]
    fn cells_done_counts_run_and_refused_cells_before_the_log() {
        assert_eq!(cells_done(RAW), 2);
        assert_eq!(cells_done("# phase chain at 1\n"), 0);
    }

    #[test]
    fn first_cell_armed_reads_its_lockdep_before() {
        assert!(first_cell_armed(RAW));
        assert!(!first_cell_armed(
            &RAW.replace("lockdep_before=1", "lockdep_before=0")
        ));
        assert!(!first_cell_armed("# phase chain at 1\n"));
    }
}
