//! The operator commands as an operator runs them: `sendgate import` and
//! `sendgate audit`, the real binary against a scratch identity store.

use std::path::PathBuf;
use std::process::{Command, Output};

use sendgate::identity::RedbStore;

const BIN: &str = env!("CARGO_BIN_EXE_sendgate");

/// A directory of its own per test, holding the store and the input files,
/// so tests running in parallel never share a store (redb locks it).
struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("sendgate-cli-ops-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch { dir }
    }

    fn store(&self) -> PathBuf {
        self.dir.join("identities.redb")
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// sendgate in the scratch directory (so no `config/sendgate.toml` of
    /// the source tree is picked up) with the scratch store.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(BIN);
        command
            .args(args)
            .current_dir(&self.dir)
            .env_remove("SENDGATE_CONFIG")
            .env_remove("RUST_LOG")
            .env("SENDGATE_STORE__PATH", self.store());
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// Runs with `input` on standard input and expects success; returns
/// (stdout, stderr).
fn ok_with_stdin(scratch: &Scratch, args: &[&str], input: &str) -> (String, String) {
    use std::io::Write;
    let mut child = scratch
        .command(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{args:?}: {output:?}");
    (text(&output.stdout), text(&output.stderr))
}

/// Runs and expects success; returns (stdout, stderr).
fn ok(scratch: &Scratch, args: &[&str]) -> (String, String) {
    let output = scratch.run(args);
    assert!(output.status.success(), "{args:?}: {output:?}");
    (text(&output.stdout), text(&output.stderr))
}

/// The count on a summary line `  LABEL   N`.
fn count(summary: &str, label: &str) -> u64 {
    summary
        .lines()
        .find_map(|line| line.trim().strip_prefix(label)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {label:?} count in:\n{summary}"))
}

const PAIRS_CSV: &str = "\
phone,bsuid,number
+1 (631) 555-1234,US.1001,
16505550000,US.1002,
not a phone,US.1003,
16505550001,us.1004,
16315551234,US.1001,
";

const PAIRS_JSON: &str = r#"{"bsuid":"US.2001","phone":"+44 20 7946 0000"}

{"bsuid":"US.2002","phone":"16505550002","colour":"blue"}
{"bsuid":"US.2003","parent_bsuid":"US.ENT.2003"}
"#;

/// A scratch store with the pairs of both files imported.
fn imported(name: &str) -> Scratch {
    let scratch = Scratch::new(name);
    scratch.file("pairs.csv", PAIRS_CSV);
    scratch.file("pairs.jsonl", PAIRS_JSON);
    ok(
        &scratch,
        &[
            "import",
            "pairs.csv",
            "--number",
            "1",
            "--allow-rejects",
            "--create",
        ],
    );
    ok(
        &scratch,
        &["import", "pairs.jsonl", "--number", "1", "--allow-rejects"],
    );
    scratch
}

#[test]
fn an_import_with_rejected_rows_exits_non_zero_unless_allowed() {
    let scratch = Scratch::new("import-rejects");
    scratch.file("pairs.csv", PAIRS_CSV);
    let output = scratch.run(&["import", "pairs.csv", "--number", "1", "--create"]);
    assert!(!output.status.success(), "{output:?}");
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert!(
        stdout.contains("rejected 2"),
        "the report is printed: {stdout}"
    );
    assert!(stderr.contains("2 rows rejected"), "{stderr}");
    assert!(stderr.contains("--allow-rejects"), "{stderr}");
    // The good rows went in all the same.
    let (stdout, _) = ok(
        &scratch,
        &["import", "pairs.csv", "--number", "1", "--allow-rejects"],
    );
    assert!(
        stdout.starts_with("imported 0, updated 0, unchanged 3"),
        "{stdout}"
    );
}

#[test]
fn import_csv_counts_rows_and_lists_rejected_lines() {
    let scratch = Scratch::new("import-csv");
    scratch.file("pairs.csv", PAIRS_CSV);
    let (stdout, _) = ok(
        &scratch,
        &[
            "import",
            "pairs.csv",
            "--number",
            "1",
            "--allow-rejects",
            "--create",
        ],
    );
    assert_eq!(
        stdout,
        concat!(
            "imported 2, updated 0, unchanged 1, rejected 2\n",
            "line 4: phone \"not a phone\" is not a phone number\n",
            "line 5: bsuid \"us.1004\" is not a BSUID (e.g. US.13491208655302741918)\n",
        )
    );
    assert!(
        scratch.store().is_file(),
        "the configured store was written"
    );

    // Run again: the store already knows everyone.
    let (stdout, _) = ok(
        &scratch,
        &["import", "pairs.csv", "--number", "1", "--allow-rejects"],
    );
    assert_eq!(
        stdout.lines().next(),
        Some("imported 0, updated 0, unchanged 3, rejected 2")
    );
}

#[test]
fn import_json_lines_is_detected_and_judged_per_line() {
    let scratch = Scratch::new("import-json");
    scratch.file("pairs.jsonl", PAIRS_JSON);
    let (stdout, stderr) = ok(
        &scratch,
        &[
            "import",
            "pairs.jsonl",
            "--portfolio",
            "acme",
            "--allow-rejects",
            "--create",
        ],
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "imported 2, updated 0, unchanged 0, rejected 1");
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(
        lines[1].starts_with("line 3: not a JSON object of known fields"),
        "{stdout}"
    );
    assert_eq!(stderr, "", "no progress bar when stderr is not a terminal");
}

#[test]
fn audit_of_a_csv_list_says_what_happens_to_each_recipient() {
    let scratch = imported("audit-csv");
    scratch.file(
        "campaign.csv",
        concat!(
            "name,recipient,segment\n",
            "Ana,+1 (631) 555-0000,a\n",
            "Bob,US.1001,b\n",
            "Cy,US.9999,c\n",
            "\n",
            "Dee,@lucia,d\n",
            "Eve,call me,e\n",
            "Flo,US.2001,f\n",
        ),
    );
    let (stdout, stderr) = ok(
        &scratch,
        &["audit", "campaign.csv", "--number", "1", "--csv"],
    );
    assert_eq!(
        stdout,
        concat!(
            "line,recipient,action,detail\n",
            "2,+1 (631) 555-0000,send to phone,\n",
            "3,US.1001,resolved BSUID to phone,16315551234\n",
            "4,US.9999,blocked,campaign_needs_phone\n",
            "6,@lucia,blocked,username_target\n",
            "7,call me,blocked,invalid_recipient\n",
            "8,US.2001,resolved BSUID to phone,442079460000\n",
        )
    );
    assert!(stderr.contains("CSV, column \"recipient\""), "{stderr}");
    assert_eq!(count(&stderr, "recipients"), 6);
    assert_eq!(count(&stderr, "send to phone"), 1);
    assert_eq!(count(&stderr, "send to BSUID"), 0);
    assert_eq!(count(&stderr, "resolved BSUID to phone"), 2);
    assert_eq!(count(&stderr, "blocked"), 3);
    assert_eq!(count(&stderr, "campaign_needs_phone"), 1);
    assert_eq!(count(&stderr, "username_target"), 1);
    assert_eq!(count(&stderr, "invalid_recipient"), 1);
}

#[test]
fn audit_reads_standard_input_as_dash() {
    let scratch = imported("audit-stdin");
    let args = ["audit", "-", "--number", "1", "--csv"];
    let (stdout, stderr) = ok_with_stdin(&scratch, &args, "US.1002\nlucia.m\n");
    assert!(
        stderr.contains("number 1 is not in [numbers]"),
        "an unknown number is said: {stderr}"
    );
    assert_eq!(
        stdout,
        concat!(
            "line,recipient,action,detail\n",
            "1,US.1002,resolved BSUID to phone,16505550000\n",
            "2,lucia.m,blocked,username_target\n",
        )
    );
}

#[test]
fn audit_of_a_plain_list_and_as_a_table() {
    let scratch = imported("audit-plain");
    scratch.file(
        "list.txt",
        "16505550000\r\nUS.1002\r\n\r\nUS.ENT.2003\r\nlucia.m\r\nn/a\r\n",
    );
    let (stdout, stderr) = ok(&scratch, &["audit", "list.txt", "--number", "1", "--csv"]);
    assert_eq!(
        stdout,
        concat!(
            "line,recipient,action,detail\n",
            "1,16505550000,send to phone,\n",
            "2,US.1002,resolved BSUID to phone,16505550000\n",
            "4,US.ENT.2003,blocked,campaign_needs_phone\n",
            "5,lucia.m,blocked,username_target\n",
            "6,n/a,blocked,invalid_recipient\n",
        )
    );
    assert!(stderr.contains("one recipient per line"), "{stderr}");
    assert_eq!(count(&stderr, "recipients"), 5);
    assert_eq!(count(&stderr, "blocked"), 3);

    // Without --csv: an aligned table, then the summary, all on stdout.
    let (stdout, stderr) = ok(&scratch, &["audit", "list.txt", "--number", "1"]);
    assert_eq!(stderr, "");
    let lines: Vec<&str> = stdout.lines().collect();
    let header = lines[0];
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        ["LINE", "RECIPIENT", "ACTION", "DETAIL"]
    );
    let resolved = lines[2];
    assert!(resolved.contains("US.1002"), "{stdout}");
    assert_eq!(
        resolved.find("resolved BSUID to phone"),
        header.find("ACTION")
    );
    assert_eq!(resolved.find("16505550000"), header.find("DETAIL"));
    assert_eq!(count(&stdout, "resolved BSUID to phone"), 1);
    assert_eq!(count(&stdout, "username_target"), 1);
}

#[test]
fn an_authentication_template_needs_a_phone() {
    let scratch = imported("audit-auth");
    let config = scratch.file("auth.toml", "[templates]\notp_login = \"AUTHENTICATION\"\n");
    scratch.file("list.txt", "US.9999\nUS.1001\n");
    let config = config.to_str().unwrap();
    let audit = |extra: &[&str]| {
        let mut args = vec![
            "audit", "list.txt", "--number", "1", "--csv", "--config", config,
        ];
        args.extend_from_slice(extra);
        ok(&scratch, &args)
    };
    let (stdout, stderr) = audit(&["--template", "otp_login"]);
    assert_eq!(
        stdout,
        concat!(
            "line,recipient,action,detail\n",
            "1,US.9999,blocked,auth_template_needs_phone\n",
            "2,US.1001,resolved BSUID to phone,16315551234\n",
        )
    );
    assert!(stderr.contains("otp_login (AUTHENTICATION)"), "{stderr}");
    assert_eq!(count(&stderr, "auth_template_needs_phone"), 1);

    let (stdout, _) = audit(&[]);
    assert!(
        stdout.contains("1,US.9999,blocked,campaign_needs_phone\n"),
        "{stdout}"
    );
}

/// Exactly one line on stderr, naming the problem.
fn fails_with_one_line(output: &Output, words: &[&str]) {
    assert!(!output.status.success(), "{output:?}");
    let stderr = text(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    for word in words {
        assert!(stderr.contains(word), "{word:?} not in {stderr}");
    }
}

#[test]
fn a_missing_input_fails_in_one_line_and_creates_no_store() {
    let scratch = Scratch::new("missing");
    let output = scratch.run(&["audit", "nope.csv", "--number", "1"]);
    fails_with_one_line(&output, &["cannot read", "nope.csv"]);
    let output = scratch.run(&["import", "nope.csv"]);
    fails_with_one_line(&output, &["cannot read", "nope.csv"]);
    assert!(!scratch.store().exists());
}

#[test]
fn audit_reads_but_never_creates_the_store() {
    let scratch = Scratch::new("no-store");
    scratch.file("list.txt", "US.1001\n");
    let (stdout, stderr) = ok(&scratch, &["audit", "list.txt", "--number", "1", "--csv"]);
    assert!(stdout.ends_with("1,US.1001,blocked,campaign_needs_phone\n"));
    assert!(stderr.contains("no identity store at"), "{stderr}");
    assert!(!scratch.store().exists());
}

#[test]
fn a_store_held_by_another_process_fails_in_one_line() {
    let scratch = Scratch::new("locked");
    scratch.file("pairs.csv", PAIRS_CSV);
    // This test process stands in for a running `sendgate serve`.
    let held = RedbStore::open(&scratch.store()).unwrap();
    let output = scratch.run(&["import", "pairs.csv", "--number", "1"]);
    fails_with_one_line(&output, &["in use by another sendgate process"]);
    drop(held);
    let (stdout, _) = ok(
        &scratch,
        &["import", "pairs.csv", "--number", "1", "--allow-rejects"],
    );
    assert!(stdout.starts_with("imported 2,"), "{stdout}");
}

#[test]
fn rows_without_a_scope_are_rejected_and_other_numbers_do_not_see_a_numbers_pairs() {
    let scratch = Scratch::new("scopes");
    scratch.file("pairs.csv", PAIRS_CSV);
    let (stdout, _) = ok(
        &scratch,
        &["import", "pairs.csv", "--allow-rejects", "--create"],
    );
    assert!(
        stdout.starts_with("imported 0, updated 0, unchanged 0, rejected 5"),
        "{stdout}"
    );
    assert!(
        stdout.contains("line 2: no number or portfolio"),
        "{stdout}"
    );
    ok(
        &scratch,
        &["import", "pairs.csv", "--number", "1", "--allow-rejects"],
    );
    scratch.file("list.txt", "US.1001\n");
    for (number, verdict) in [
        ("1", "resolved BSUID to phone,16315551234"),
        ("2", "blocked,campaign_needs_phone"),
    ] {
        let (stdout, _) = ok(
            &scratch,
            &["audit", "list.txt", "--number", number, "--csv"],
        );
        assert!(
            stdout.ends_with(&format!("1,US.1001,{verdict}\n")),
            "{number}: {stdout}"
        );
    }
}

#[test]
fn move_scope_hands_a_portfolios_identities_to_a_number() {
    let scratch = Scratch::new("move-scope");
    scratch.file("pairs.csv", PAIRS_CSV);
    ok(
        &scratch,
        &[
            "import",
            "pairs.csv",
            "--portfolio",
            "default",
            "--allow-rejects",
            "--create",
        ],
    );
    scratch.file("list.txt", "US.1001\n");
    let audit = || ok(&scratch, &["audit", "list.txt", "--number", "7", "--csv"]).0;
    assert!(audit().ends_with("blocked,campaign_needs_phone\n"));
    let (stdout, _) = ok(
        &scratch,
        &["move-scope", "--from", "default", "--to-number", "7"],
    );
    assert!(
        stdout.starts_with("moved 2 from \"default\" to \"number:7\": 2 records"),
        "{stdout}"
    );
    assert!(audit().ends_with("resolved BSUID to phone,16315551234\n"));
    let output = scratch.run(&["move-scope", "--from", "default"]);
    assert!(!output.status.success(), "a target is required");
}

/// A parent BSUID (`CC.ENT.…`, valid across linked portfolios) in the
/// bsuid column is imported, and a send to it resolves to the phone, as a
/// webhook's parent does.
#[test]
fn import_accepts_a_parent_bsuid_in_the_bsuid_column() {
    let scratch = Scratch::new("import-parent");
    scratch.file(
        "pairs.csv",
        "bsuid,phone\nUS.ENT.7001,16505557001\nUS.7002,16505557002\n",
    );
    let (stdout, _) = ok(
        &scratch,
        &["import", "pairs.csv", "--number", "1", "--create"],
    );
    assert_eq!(stdout, "imported 2, updated 0, unchanged 0, rejected 0\n");
    scratch.file("list.txt", "US.ENT.7001\nUS.7002\nUS.ENT.7003\n");
    let (stdout, _) = ok(&scratch, &["audit", "list.txt", "--number", "1", "--csv"]);
    assert_eq!(
        stdout,
        concat!(
            "line,recipient,action,detail\n",
            "1,US.ENT.7001,resolved BSUID to phone,16505557001\n",
            "2,US.7002,resolved BSUID to phone,16505557002\n",
            "3,US.ENT.7003,blocked,campaign_needs_phone\n",
        )
    );
    // A parent in both columns must be the same one.
    scratch.file(
        "both.csv",
        "bsuid,parent_bsuid,phone\nUS.ENT.7004,US.ENT.7005,16505557004\n",
    );
    let output = scratch.run(&["import", "both.csv", "--number", "1"]);
    assert!(!output.status.success(), "{output:?}");
    assert!(
        text(&output.stdout).contains("line 2: bsuid \"US.ENT.7004\" is a parent BSUID"),
        "{output:?}"
    );
}

/// An import never makes a store on its own: run from the wrong directory
/// (a relative `store.path`), it says where it looked and how to start a
/// new store, and creates nothing.
#[test]
fn import_refuses_to_create_a_store_unless_told_to() {
    let scratch = Scratch::new("import-create");
    scratch.file("pairs.csv", PAIRS_CSV);
    let output = scratch.run(&["import", "pairs.csv", "--number", "1", "--allow-rejects"]);
    fails_with_one_line(&output, &["no identity store at", "--create"]);
    assert!(!scratch.store().exists(), "no store was created");
    assert_eq!(text(&output.stdout), "", "nothing imported");

    // The default, relative store path: the message says where that is.
    let output = scratch
        .command(&["import", "pairs.csv", "--number", "1"])
        .env_remove("SENDGATE_STORE__PATH")
        .output()
        .unwrap();
    let dir = scratch.dir.canonicalize().unwrap();
    fails_with_one_line(
        &output,
        &[
            "sendgate-identities.redb",
            dir.to_str().unwrap(),
            "--create",
        ],
    );
    assert!(!scratch.dir.join("sendgate-identities.redb").exists());

    let (stdout, _) = ok(
        &scratch,
        &[
            "import",
            "pairs.csv",
            "--number",
            "1",
            "--allow-rejects",
            "--create",
        ],
    );
    assert!(stdout.starts_with("imported 2,"), "{stdout}");
    assert!(scratch.store().is_file());
    // Once it exists, --create changes nothing.
    let (stdout, _) = ok(
        &scratch,
        &[
            "import",
            "pairs.csv",
            "--number",
            "1",
            "--allow-rejects",
            "--create",
        ],
    );
    assert!(
        stdout.starts_with("imported 0, updated 0, unchanged 3"),
        "{stdout}"
    );
    let help = Command::new(BIN)
        .args(["import", "--help"])
        .output()
        .unwrap();
    assert!(text(&help.stdout).contains("--create"));
}

#[test]
fn fingerprint_reads_the_token_from_stdin_and_never_prints_it() {
    use std::io::Write;
    let fingerprint = |input: &str, key: Option<&str>| {
        let mut command = Command::new(BIN);
        command
            .arg("fingerprint")
            .env_remove("SENDGATE_FINGERPRINT_KEY")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped());
        if let Some(key) = key {
            command.env("SENDGATE_FINGERPRINT_KEY", key);
        }
        let mut child = command.spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "{output:?}");
        text(&output.stdout).trim().to_owned()
    };
    let plain = fingerprint("EAABsecret-token\n", None);
    assert_eq!(plain.len(), 16);
    assert!(plain.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(!plain.contains("secret"));
    assert_eq!(
        fingerprint("Bearer EAABsecret-token", None),
        plain,
        "as sent in a header"
    );
    assert_eq!(
        plain,
        sendgate::fingerprint::Fingerprinter::new(None)
            .of("EAABsecret-token")
            .to_string(),
        "what serve computes"
    );
    assert_ne!(fingerprint("EAABsecret-token", Some("k")), plain, "keyed");
}
