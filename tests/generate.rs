//! `hail generate`: the man page, rendered by man-db, and the bash completion, loaded by
//! bash-completion, offer every option that the real binary's `--help` lists, for the agent and
//! every command.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use hail_testkit::prereq;

const HAIL: &str = env!("CARGO_BIN_EXE_hail");

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn hail(args: &[&str]) -> String {
    let out = run(Command::new(HAIL).args(args));
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

fn generate(what: &str) -> String {
    let text = hail(&["generate", what]);
    assert!(
        !text.trim().is_empty(),
        "hail generate {what} printed nothing"
    );
    text
}

/// The commands `hail --help` lists (not `help`, which is `--help` again).
fn commands() -> Vec<String> {
    let help = hail(&["--help"]);
    let list = help
        .split_once("\nCommands:\n")
        .expect("a Commands: section in hail --help")
        .1;
    let commands: Vec<String> = list
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .filter(|c| c != "help")
        .collect();
    assert!(commands.contains(&"status".to_string()), "{commands:?}");
    commands
}

/// The long options (without `--`) that `hail [COMMAND] --help` lists: the first `--name` of
/// each option line (descriptions are indented deeper and may name options too).
fn long_options(command: Option<&str>) -> Vec<String> {
    let mut args: Vec<&str> = command.into_iter().collect();
    args.push("--help");
    let help = hail(&args);
    let options: Vec<String> = help
        .lines()
        .filter(|l| l.len() - l.trim_start().len() < 8 && l.trim_start().starts_with('-'))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|word| word.strip_prefix("--"))
                .map(|name| name.trim_end_matches(',').to_string())
        })
        .collect();
    assert!(
        options.contains(&"help".to_string()),
        "hail {command:?} --help: no --help among {options:?}"
    );
    options
}

/// `hail generate man` as man-db renders it: plain text, wide, without hyphenation.
fn rendered_man_page() -> String {
    let page = generate("man");
    // From standard input: man drops root privileges and could not read a private temp dir.
    let mut man = Command::new("man")
        .args(["--nh", "--nj", "-l", "-"])
        .env("MANWIDTH", "250")
        .env("MANPAGER", "cat")
        .env("LC_ALL", "C")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run man");
    man.stdin
        .take()
        .unwrap()
        .write_all(page.as_bytes())
        .expect("page to man");
    let out = man.wait_with_output().expect("man");
    assert!(
        out.status.success(),
        "man -l: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 page")
}

/// The rendered page's sections, as (heading, text): headings start in the first column.
fn sections(page: &str) -> Vec<(String, String)> {
    let mut sections: Vec<(String, String)> = Vec::new();
    for line in page.lines() {
        if line.starts_with(|c: char| !c.is_whitespace()) {
            sections.push((line.trim().to_string(), String::new()));
        } else if let Some((_, text)) = sections.last_mut() {
            text.push_str(line);
            text.push('\n');
        }
    }
    sections
}

/// Whether `text` has an entry for `--name`: a line starting with it (after `-x, `).
fn has_entry(text: &str, name: &str) -> bool {
    let option = format!("--{name}");
    text.lines().any(|line| {
        let line = line.trim_start();
        let line = match line.split_once(", ") {
            Some((short, rest)) if short.len() == 2 && short.starts_with('-') => rest,
            _ => line,
        };
        line.strip_prefix(&option)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '<', '[']))
    })
}

#[test]
#[cfg_attr(hail_skip_man, ignore = "needs man (HAIL_TEST_SKIP_MISSING=1)")]
fn the_man_page_documents_every_option_of_every_command() {
    prereq::require(&prereq::MAN);
    let page = rendered_man_page();
    let sections = sections(&page);
    let headings: Vec<&str> = sections.iter().map(|(h, _)| h.as_str()).collect();
    assert!(headings.contains(&"NAME"), "{headings:?}");

    // The agent's options: the sections before the first command's.
    let first_command = sections
        .iter()
        .position(|(h, _)| h.starts_with("HAIL "))
        .unwrap_or_else(|| panic!("no command sections among {headings:?}"));
    let agent: String = sections[..first_command]
        .iter()
        .map(|(_, t)| t.as_str())
        .collect();
    let missing: Vec<_> = long_options(None)
        .into_iter()
        .filter(|o| !has_entry(&agent, o))
        .collect();
    assert!(
        missing.is_empty(),
        "hail's options missing: {missing:?}\n{page}"
    );

    for command in commands() {
        let heading = format!("HAIL {}", command.to_uppercase());
        let (_, text) = sections
            .iter()
            .find(|(h, _)| *h == heading)
            .unwrap_or_else(|| panic!("no section {heading} among {headings:?}"));
        assert!(
            text.contains(&format!("hail {command} ")),
            "{heading} has no synopsis:\n{text}"
        );
        let missing: Vec<_> = long_options(Some(&command))
            .into_iter()
            .filter(|o| !has_entry(text, o))
            .collect();
        assert!(
            missing.is_empty(),
            "hail {command}'s options missing from {heading}: {missing:?}\n{text}"
        );
    }
}

/// bash-completion's loader, which Debian's bash runs for interactive shells.
const BASH_COMPLETION: &str = "/usr/share/bash-completion/bash_completion";

/// What bash completes for `words` (the last one being completed) with the completion `hail
/// generate bash` printed into `share`/bash-completion/completions/hail: loaded by
/// bash-completion as on the first TAB after `hail`, through the function `complete -p hail`
/// then names.
fn bash_completes(share: &Path, words: &[&str]) -> Vec<String> {
    const DRIVE: &str = r#"
source "$1" || exit 10
shift
_completion_loader hail
spec=$(complete -p hail) || exit 11
case "$spec" in *" -F "*" hail") ;; *) echo "not a function: $spec" >&2; exit 12 ;; esac
fn=${spec#* -F }
fn=${fn%% *}
[ "$fn" != _minimal ] || { echo "bash-completion found no completion for hail" >&2; exit 13; }
COMP_WORDS=("$@")
COMP_CWORD=$(( $# - 1 ))
COMP_LINE="$*"
COMP_POINT=${#COMP_LINE}
"$fn" "${COMP_WORDS[0]}" "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
printf '%s\n' "${COMPREPLY[@]}"
"#;
    let out = run(Command::new("bash")
        .args([
            "--norc",
            "--noprofile",
            "-c",
            DRIVE,
            "bash",
            BASH_COMPLETION,
        ])
        .args(words)
        .env("XDG_DATA_DIRS", share)
        .env("BASH_COMPLETION_USER_DIR", share.join("user")));
    String::from_utf8(out.stdout)
        .expect("UTF-8 completions")
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
#[cfg_attr(
    hail_skip_bash_completion,
    ignore = "needs bash-completion (HAIL_TEST_SKIP_MISSING=1)"
)]
fn bash_completes_every_option_of_every_command() {
    prereq::require(&prereq::BASH_COMPLETION);
    let share = tempfile::tempdir().unwrap();
    let completions = share.path().join("bash-completion/completions");
    std::fs::create_dir_all(&completions).unwrap();
    std::fs::write(completions.join("hail"), generate("bash")).unwrap();
    let share = share.path();

    let offered = bash_completes(share, &["hail", "--poll"]);
    assert_eq!(offered, ["--poll-period"]);

    let commands = commands();
    let offered = bash_completes(share, &["hail", ""]);
    for command in &commands {
        assert!(offered.contains(command), "{command} not in {offered:?}");
    }
    for command in [None].into_iter().chain(commands.iter().map(Some)) {
        let mut words = vec!["hail"];
        words.extend(command.map(String::as_str));
        words.push("--");
        let offered = bash_completes(share, &words);
        let missing: Vec<_> = long_options(command.map(String::as_str))
            .into_iter()
            .filter(|o| !offered.contains(&format!("--{o}")))
            .collect();
        assert!(
            missing.is_empty(),
            "{words:?}: {missing:?} not in {offered:?}"
        );
    }
}

/// zsh and fish are not installed to run them; their scripts are checked as text.
#[test]
fn zsh_and_fish_completions_name_hail_and_its_options() {
    let zsh = generate("zsh");
    assert!(zsh.starts_with("#compdef hail\n"), "{zsh}");
    let fish = generate("fish");
    assert!(fish.contains("complete -c hail "), "{fish}");
    for option in long_options(None) {
        assert!(
            zsh.contains(&format!("'--{option}")),
            "--{option} not in zsh's"
        );
        assert!(
            fish.contains(&format!("-l {option}")),
            "--{option} not in fish's"
        );
    }
}
