//! The man page and shell completions are generated from the clap
//! definition and checked in; these tests regenerate them and fail, naming
//! the command to run, when the checked-in copies are stale.

use std::path::{Path, PathBuf};
use std::process::Command;

use clap::CommandFactory;

use pgsense_pg::{cli, exit};

const UPDATE: &str = "PGSENSE_PG_UPDATE_GENERATED";

/// The man page's prose, with a line `!!PART!!` where each generated part
/// goes (see [`man_page`]).
const MAN_TEMPLATE: &str = "man/pgsense-pg.1.in";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Compares `path` with `expected`; with PGSENSE_PG_UPDATE_GENERATED=1,
/// rewrites it instead.
fn ensure_file(path: &Path, expected: &[u8]) {
    let actual = std::fs::read(path).unwrap_or_default();
    if actual == expected {
        return;
    }
    if std::env::var_os(UPDATE).is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, expected).unwrap();
        return;
    }
    panic!(
        "{} is stale: run `{UPDATE}=1 cargo test generated` and commit the result",
        path.display()
    );
}

/// The man page: the template with its parts filled in from the clap
/// definition (`!!CLAP!!`: title, name, synopsis, description, options;
/// `!!COMMANDS!!`: each command and its options; `!!VERSION!!`) and from the
/// one exit-status table (`!!EXIT STATUS!!`).
fn man_page() -> Vec<u8> {
    let path = root().join(MAN_TEMPLATE);
    let template =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let command = cli::Cli::command();
    let man = clap_mangen::Man::new(command.clone())
        .title("PGSENSE-PG")
        .date("2026-11-27");
    let mut page = String::new();
    for line in template.lines() {
        let part = match line {
            "!!CLAP!!" => clap_part(&man),
            "!!COMMANDS!!" => commands_part(&command),
            "!!EXIT STATUS!!" => exit_status_part(),
            "!!VERSION!!" => {
                let mut out = Vec::new();
                man.render_version_section(&mut out).unwrap();
                String::from_utf8(out).unwrap()
            }
            _ if line.starts_with("!!") => panic!("{MAN_TEMPLATE}: unknown part {line}"),
            _ => format!("{line}\n"),
        };
        page.push_str(&part);
    }
    // clap_mangen puts an empty line between two .br before the list of an
    // option's possible values, which mandoc -Tlint flags: .sp is meant.
    let page = page.replace("\n.br\n\n.br\n", "\n.sp\n");
    wrap_roff(&page).into_bytes()
}

/// Title, name, synopsis, description and the global options.
fn clap_part(man: &clap_mangen::Man) -> String {
    let mut out = Vec::new();
    man.render_title(&mut out).unwrap();
    man.render_name_section(&mut out).unwrap();
    man.render_synopsis_section(&mut out).unwrap();
    man.render_description_section(&mut out).unwrap();
    man.render_options_section(&mut out).unwrap();
    String::from_utf8(out).unwrap()
}

/// The commands, and the options of each command that has some.
fn commands_part(command: &clap::Command) -> String {
    // clap_mangen would point at one page per command, which this project
    // does not ship: the commands are described here instead.
    let mut out = String::from(".SH COMMANDS\n");
    for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
        let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
        let usage = if sub.get_name() == "load" {
            " [FILE]..."
        } else {
            ""
        };
        out.push_str(&format!(
            ".TP\n\\fB{}\\fR{usage}\n{about}\n",
            sub.get_name()
        ));
    }
    for sub in command.get_subcommands() {
        if sub
            .get_arguments()
            .any(|a| !a.is_global_set() && a.get_id() != "help")
        {
            let mut section = Vec::new();
            clap_mangen::Man::new(sub.clone())
                .render_options_section(&mut section)
                .unwrap();
            out.push_str(&String::from_utf8(section).unwrap().replacen(
                ".SH OPTIONS",
                &format!(".SH \"{} OPTIONS\"", sub.get_name().to_uppercase()),
                1,
            ));
        }
    }
    out
}

/// One `.TP` paragraph per entry of the exit-status table: its codes in
/// bold, then its detail as a sentence.
fn exit_status_part() -> String {
    let mut out = String::new();
    for entry in exit::STATUSES {
        let codes: Vec<String> = entry.codes.iter().map(|c| format!("\\fB{c}\\fR")).collect();
        out.push_str(&format!(
            ".TP\n{}\n{}\n",
            codes.join(", "),
            roff_text(&man_sentence(entry.detail))
        ));
    }
    out
}

/// A detail of the exit-status table as the man page says it: a sentence,
/// capitalised and ended with a full stop.
pub fn man_sentence(detail: &str) -> String {
    let mut chars = detail.chars();
    let first = chars.next().map(|c| c.to_uppercase().to_string());
    let mut sentence = first.unwrap_or_default() + chars.as_str();
    if !sentence.ends_with('.') {
        sentence.push('.');
    }
    sentence
}

/// Plain text as a roff text line: backslashes and hyphens escaped, and a
/// leading `.` or `'` kept from reading as a request.
fn roff_text(text: &str) -> String {
    let escaped = text.replace('\\', "\\e").replace('-', "\\-");
    if escaped.starts_with(['.', '\'']) {
        format!("\\&{escaped}")
    } else {
        escaped
    }
}

/// Wraps filled text lines at 80 bytes and trims trailing blanks, as man
/// page style wants; requests and no-fill blocks stay as they are.
fn wrap_roff(page: &str) -> String {
    let mut out = String::new();
    let mut fill = true;
    for line in page.lines() {
        let line = line.trim_end();
        match line {
            ".nf" => fill = false,
            ".fi" => fill = true,
            _ => {}
        }
        if !fill || line.starts_with('.') || line.len() <= 80 {
            out.push_str(line);
            out.push('\n');
            continue;
        }
        let mut width = 0;
        for word in line.split(' ').filter(|w| !w.is_empty()) {
            if width > 0 && width + 1 + word.len() > 80 {
                out.push('\n');
                width = 0;
                if word.starts_with(['.', '\'']) {
                    // A control character at the start of a line would make
                    // the word a request.
                    out.push_str("\\&");
                }
            } else if width > 0 {
                out.push(' ');
                width += 1;
            }
            out.push_str(word);
            width += word.len();
        }
        out.push('\n');
    }
    out
}

#[test]
fn man_page_is_current() {
    ensure_file(&root().join("man/pgsense-pg.1"), &man_page());
}

#[test]
fn completions_are_current() {
    use clap_complete::Shell;
    for (shell, file) in [
        (Shell::Bash, "pgsense-pg.bash"),
        (Shell::Zsh, "_pgsense-pg"),
        (Shell::Fish, "pgsense-pg.fish"),
    ] {
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut cli::Cli::command(), "pgsense-pg", &mut out);
        ensure_file(&root().join("completions").join(file), &out);
    }
}

#[test]
fn man_page_lints_clean() {
    let page = root().join("man/pgsense-pg.1");
    let output = match Command::new("mandoc")
        .args(["-man", "-Wall", "-Tlint"])
        .arg(&page)
        .output()
    {
        Ok(output) => output,
        Err(_) if std::env::var_os("CI").is_none() => {
            eprintln!("mandoc not installed: man page not linted (apt-get install mandoc)");
            return;
        }
        Err(err) => panic!("mandoc is required under CI: {err}"),
    };
    let report = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && report.trim().is_empty(),
        "mandoc -Tlint:\n{report}"
    );
}
