//! Shell completions (issue 6, "Tests"): the checked-in files work in real
//! bash, zsh and fish.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::Scratch;
use crate::support::process::{self, Finished, installed};

/// A completion file of the repository.
fn completion_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("completions")
        .join(name)
}

/// Runs a shell in a scrubbed environment with HOME (and fish's XDG
/// directories) in `home`, bounded in time.
fn run_shell(program: &Path, args: &[&str], home: &Path) -> Finished {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("XDG_DATA_HOME", home.join("data"))
        .env("XDG_CACHE_HOME", home.join("cache"))
        .current_dir(home);
    let finished = process::spawn(
        &mut cmd,
        process::Stdin::Null,
        &program.display().to_string(),
    )
    .wait(Duration::from_secs(30));
    assert!(
        finished.status.success(),
        "{} failed: {finished:?}",
        program.display()
    );
    finished
}

#[track_caller]
fn assert_offers_load(shell: &str, offered: &[String], finished: &Finished) {
    assert!(
        offered.iter().any(|word| word == "load"),
        "{shell} does not offer `load` for `pgsense-pg l`: {offered:?}\n{finished:?}"
    );
}

/// The bash completion, sourced in real bash, offers `load` for
/// `pgsense-pg l`.
#[test]
fn bash_completes_l_to_load() {
    let Some(bash) = installed("bash", "bash") else {
        return;
    };
    let scratch = Scratch::new();
    const SCRIPT: &str = r#"
source "$1" || exit 3
spec=$(complete -p pgsense-pg) || { echo "no completion for pgsense-pg" >&2; exit 4; }
function=${spec##*-F }
function=${function%% *}
COMP_LINE="pgsense-pg l"
COMP_POINT=${#COMP_LINE}
COMP_WORDS=(pgsense-pg l)
COMP_CWORD=1
COMP_TYPE=9
COMP_KEY=9
"$function" pgsense-pg l pgsense-pg
printf '%s\n' "${COMPREPLY[@]}"
"#;
    let file = completion_file("pgsense-pg.bash");
    let finished = run_shell(
        &bash,
        &[
            "--norc",
            "--noprofile",
            "-c",
            SCRIPT,
            "bash",
            &file.display().to_string(),
        ],
        scratch.path(),
    );
    let offered: Vec<String> = finished.stdout.lines().map(str::to_owned).collect();
    assert_offers_load("bash", &offered, &finished);
}

/// The zsh completion, installed in $fpath with compinit, in an interactive
/// zsh on a pseudo-terminal (zsh/zpty): Tab after `pgsense-pg l` offers
/// `load`. compadd is wrapped to print each match it adds.
#[test]
fn zsh_completes_l_to_load() {
    let Some(zsh) = installed("zsh", "zsh") else {
        return;
    };
    let scratch = Scratch::new();
    let functions = scratch.path().join("functions");
    fs::create_dir(&functions).expect("create the fpath directory");
    fs::copy(
        completion_file("_pgsense-pg"),
        functions.join("_pgsense-pg"),
    )
    .expect("copy _pgsense-pg");
    // Markers are split in the source so that the terminal's echo of it
    // never matches them.
    const HARNESS: &str = r#"
zmodload zsh/zpty || { print -u2 'no zsh/zpty module'; exit 3 }
zpty completer zsh -f -i
zpty -w completer "PROMPT= RPROMPT=
fpath=(${(q)1} \$fpath)
autoload -U compinit && compinit -u -D
zstyle ':completion:*' list-grouped false
zstyle ':completion:*' insert-tab false
compadd() {
  if [[ \${@[1,(i)(-|--)]} == *-(O|A|D)\\ * ]]; then builtin compadd \"\$@\"; return; fi
  local -a __hits
  builtin compadd -A __hits \"\$@\"
  local __hit; for __hit in \$__hits; do print -r -- \"<m\"\"atch>\$__hit</match>\"; done
  builtin compadd \"\$@\"
}
__completion_done() { print -r -- '<''done>' }
comppostfuncs=(__completion_done)
bindkey '^I' complete-word
print -r -- '<''ready>'"
out=
while zpty -r completer line; do out+=$line; [[ $out == *'<ready>'* ]] && break; done
[[ $out == *'<ready>'* ]] || { print -u2 -r -- "zsh did not start: $out"; exit 4 }
zpty -w -n completer "$2"$'\t'
out=
while zpty -r completer line; do out+=$line; [[ $out == *'<done>'* ]] && break; done
zpty -d completer
print -r -- $out
"#;
    let harness = scratch.write("harness.zsh", HARNESS);
    let finished = run_shell(
        &zsh,
        &[
            "-f",
            &harness.display().to_string(),
            &functions.display().to_string(),
            "pgsense-pg l",
        ],
        scratch.path(),
    );
    assert!(
        finished.stdout.contains("<done>"),
        "the completion did not finish: {finished:?}"
    );
    let offered: Vec<String> = finished
        .stdout
        .split("<match>")
        .skip(1)
        .filter_map(|rest| rest.split_once("</match>"))
        .map(|(word, _)| word.to_owned())
        .collect();
    assert_offers_load("zsh", &offered, &finished);
}

/// The fish completion, sourced in real fish, offers `load` for
/// `pgsense-pg l`.
#[test]
fn fish_completes_l_to_load() {
    let Some(fish) = installed("fish", "fish") else {
        return;
    };
    let scratch = Scratch::new();
    let file = completion_file("pgsense-pg.fish");
    let finished = run_shell(
        &fish,
        &[
            "--no-config",
            "-c",
            "source $argv[1]; or exit 3; complete -C 'pgsense-pg l'",
            &file.display().to_string(),
        ],
        scratch.path(),
    );
    let offered: Vec<String> = finished
        .stdout
        .lines()
        .map(|line| line.split('\t').next().unwrap_or_default().to_owned())
        .collect();
    assert_offers_load("fish", &offered, &finished);
}
