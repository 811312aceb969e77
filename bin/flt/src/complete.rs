//! Shell completion: clap's scripts for the verbs and flags, and around
//! them functions that complete kinds and the names of live objects (`flt
//! get deploy <TAB>`, `flt logs <TAB>`, `flt describe po/<TAB>`, `flt top
//! pods <TAB>`) by asking the masters through the hidden `flt __complete`,
//! which prints one name a line and stays silent on errors:
//! - bash: `flt __complete [KIND] [-n NS] [-A]`, the line parsed in bash;
//! - zsh and fish: `flt __complete --words -- WORD... CURRENT`, the words
//!   typed after `flt` and the one being completed, parsed here ([`plan`]).

use anyhow::Result;
use clap::{Args, CommandFactory};
use flotilla_client::ListParams;
use flotilla_objects::registry::{self, RESOURCES};

use crate::commands::{name_of, Ctx};
use crate::Shell;

#[derive(Args, Debug)]
pub struct CompleteArgs {
    /// The kind whose names to print (none: the kinds).
    pub kind: Option<String>,
    /// Names across all namespaces.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Complete the command line given after `--` (the words after `flt`,
    /// the last one the word being completed).
    #[arg(long)]
    pub words: bool,
    #[arg(last = true)]
    pub line: Vec<String>,
}

/// What a command line being typed wants completed.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// The kinds.
    Kinds,
    /// Names of objects of `kind`, each printed after `prefix`
    /// (`deploy/` when completing `deploy/<TAB>`).
    Names {
        kind: String,
        prefix: String,
        namespace: Option<String>,
        all_namespaces: bool,
    },
}

/// Parse the words after `flt` (the last: the word being completed) as the
/// bash function does: the verb, its first argument, -n and -A.
pub fn plan(words: &[String]) -> Option<Plan> {
    let (cur, done) = words.split_last()?;
    let (mut verb, mut kind, mut nargs) = (String::new(), String::new(), 0);
    let (mut namespace, mut all) = (None, false);
    let mut it = done.iter();
    while let Some(w) = it.next() {
        match w.as_str() {
            "-n" | "--namespace" => namespace = it.next().cloned(),
            "--context" | "--server" => {
                it.next();
            }
            "-A" | "--all-namespaces" => all = true,
            _ if w.starts_with("--namespace=") => {
                namespace = w.strip_prefix("--namespace=").map(str::to_string)
            }
            _ if w.starts_with('-') => {}
            _ if verb.is_empty() => verb = w.clone(),
            _ if ["rollout", "set", "top"].contains(&verb.as_str()) => verb = format!("{verb}-{w}"),
            _ => {
                nargs += 1;
                if nargs == 1 {
                    kind = w.clone();
                }
            }
        }
    }
    if cur.starts_with('-') {
        return None;
    }
    let names = |kind: &str, prefix: String| {
        Some(Plan::Names {
            kind: kind.to_string(),
            prefix,
            namespace: namespace.clone(),
            all_namespaces: all,
        })
    };
    match verb.as_str() {
        "logs" | "exec" | "attach" | "port-forward" | "top-pod" | "top-pods" | "top-po"
            if nargs == 0 =>
        {
            names("pods", String::new())
        }
        "top-node" | "top-nodes" | "top-no" if nargs == 0 => names("nodes", String::new()),
        "cordon" | "uncordon" | "drain" if nargs == 0 => names("nodes", String::new()),
        v if v.starts_with("rollout-")
            || v.starts_with("set-")
            || [
                "get", "describe", "delete", "edit", "patch", "label", "annotate", "scale",
                "explain", "wait", "expose",
            ]
            .contains(&v) =>
        {
            if nargs == 0 {
                return match cur.split_once('/') {
                    Some((k, _)) if v != "explain" => names(k, format!("{k}/")),
                    _ => Some(Plan::Kinds),
                };
            }
            if v == "explain" || kind.contains('/') {
                return None;
            }
            names(&kind, String::new())
        }
        _ => None,
    }
}

/// The verbs whose first argument is a kind (then names), and those whose
/// first argument is a pod.
const BASH_NAMES: &str = r#"
# flt: kinds and live object names, asked of the masters (flt __complete).
_flt_live() {
    local cur="${COMP_WORDS[COMP_CWORD]}" verb="" kind="" nargs=0 i w
    local -a opts=()
    for ((i = 1; i < COMP_CWORD; i++)); do
        w="${COMP_WORDS[i]}"
        case "$w" in
            -n|--namespace|--context|--server) opts+=("$w" "${COMP_WORDS[i+1]}"); ((i++)) ;;
            --namespace=*|--context=*|--server=*|-A|--all-namespaces) opts+=("$w") ;;
            -*) ;;
            *) if [[ -z $verb ]]; then verb=$w
               elif [[ $verb == rollout || $verb == set || $verb == top ]]; then verb="$verb-$w"
               else ((nargs++)); [[ $nargs -eq 1 ]] && kind=$w; fi ;;
        esac
    done
    [[ $cur == -* ]] && return 1
    case "$verb" in
        logs|exec|attach|port-forward|top-pod|top-pods|top-po)
            [[ $nargs -eq 0 ]] || return 1
            kind=pods ;;
        top-node|top-nodes|top-no|cordon|uncordon|drain)
            [[ $nargs -eq 0 ]] || return 1
            kind=nodes ;;
        get|describe|delete|edit|patch|label|annotate|scale|explain|wait|expose|rollout-*|set-*)
            if [[ $nargs -eq 0 ]]; then
                if [[ $cur == */* && $verb != explain ]]; then
                    COMPREPLY=($(compgen -P "${cur%%/*}/" -W "$(flt __complete "${cur%%/*}" "${opts[@]}" 2>/dev/null)" -- "${cur#*/}"))
                else
                    COMPREPLY=($(compgen -W "$(flt __complete 2>/dev/null)" -- "$cur"))
                fi
                return 0
            fi
            [[ $verb == explain || $kind == */* ]] && return 1 ;;
        *) return 1 ;;
    esac
    COMPREPLY=($(compgen -W "$(flt __complete "$kind" "${opts[@]}" 2>/dev/null)" -- "$cur"))
    return 0
}
_flt_with_names() { _flt_live || _flt "$@"; }
complete -F _flt_with_names -o bashdefault -o default flt
"#;

/// zsh: live names when the line asks for them, else clap's completion.
const ZSH_NAMES: &str = r#"
# flt: kinds and live object names, asked of the masters (flt __complete).
_flt_with_names() {
    local -a live
    live=(${(f)"$(flt __complete --words -- "${(@)words[2,CURRENT]}" 2>/dev/null)"})
    if (( ${#live} )); then
        compadd -Q -- "${(@)live}"
    else
        _flt "$@"
    fi
}
compdef _flt_with_names flt
"#;

/// fish: live names added to clap's completions (none when the line does
/// not ask for names).
const FISH_NAMES: &str = r#"
# flt: kinds and live object names, asked of the masters (flt __complete).
function __flt_live
    set -l words (commandline -opc)
    flt __complete --words -- $words[2..-1] (commandline -ct) 2>/dev/null
end
complete -c flt -f -a '(__flt_live)'
"#;

/// Print the completion script for `shell`.
pub fn completion(shell: Shell) {
    let sh = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut script = Vec::new();
    clap_complete::generate(sh, &mut crate::Cli::command(), "flt", &mut script);
    script.extend_from_slice(
        match shell {
            Shell::Bash => BASH_NAMES,
            Shell::Zsh => ZSH_NAMES,
            Shell::Fish => FISH_NAMES,
        }
        .as_bytes(),
    );
    // A reader that stops early (`| head`) is not an error.
    let _ = std::io::Write::write_all(&mut std::io::stdout(), &script);
}

/// `flt __complete [KIND]`: the kinds, or the names of KIND's objects;
/// `flt __complete --words -- WORDS...`: what the line completes to.
pub async fn names(ctx: &Ctx, a: &CompleteArgs) -> Result<()> {
    if a.words {
        let cur = a.line.last().map(String::as_str).unwrap_or("");
        let out = match plan(&a.line) {
            None => Vec::new(),
            Some(Plan::Kinds) => RESOURCES.iter().map(|r| r.plural.to_string()).collect(),
            Some(Plan::Names {
                kind,
                prefix,
                namespace,
                all_namespaces,
            }) => {
                let ns = namespace.unwrap_or_else(|| ctx.namespace.clone());
                live(ctx, &kind, &ns, all_namespaces)
                    .await
                    .into_iter()
                    .map(|n| format!("{prefix}{n}"))
                    .collect()
            }
        };
        for c in out.iter().filter(|c| c.starts_with(cur)) {
            println!("{c}");
        }
        return Ok(());
    }
    let Some(kind) = &a.kind else {
        for r in RESOURCES {
            println!("{}", r.plural);
        }
        return Ok(());
    };
    for n in live(ctx, kind, &ctx.namespace, a.all_namespaces).await {
        println!("{n}");
    }
    Ok(())
}

/// The names of `kind`'s objects in `ns` (or all), sorted; none on errors
/// (completion must not print errors into the user's command line).
async fn live(ctx: &Ctx, kind: &str, ns: &str, all: bool) -> Vec<String> {
    let Some(info) = registry::lookup(kind) else {
        return Vec::new();
    };
    let ns = if all || !info.namespaced { "" } else { ns };
    let Ok(l) = ctx
        .client
        .list(info.plural, ns, &ListParams::default())
        .await
    else {
        return Vec::new();
    };
    let mut names: Vec<String> = l.items.iter().map(|i| name_of(i).to_string()).collect();
    names.sort_unstable();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(line: &[&str]) -> Option<Plan> {
        plan(&line.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    fn names(kind: &str, prefix: &str, ns: Option<&str>, all: bool) -> Option<Plan> {
        Some(Plan::Names {
            kind: kind.into(),
            prefix: prefix.into(),
            namespace: ns.map(str::to_string),
            all_namespaces: all,
        })
    }

    #[test]
    fn the_line_says_what_to_complete() {
        assert_eq!(p(&["get", ""]), Some(Plan::Kinds));
        assert_eq!(p(&["get", "deploy", "w"]), names("deploy", "", None, false));
        assert_eq!(p(&["describe", "po/x"]), names("po", "po/", None, false));
        assert_eq!(
            p(&["-n", "kube-system", "logs", ""]),
            names("pods", "", Some("kube-system"), false)
        );
        assert_eq!(p(&["top", "pods", "-A", ""]), names("pods", "", None, true));
        assert_eq!(p(&["top", "nodes", ""]), names("nodes", "", None, false));
        assert_eq!(p(&["attach", ""]), names("pods", "", None, false));
        assert_eq!(p(&["cordon", ""]), names("nodes", "", None, false));
        assert_eq!(
            p(&["rollout", "status", "deploy", ""]),
            names("deploy", "", None, false)
        );
        assert_eq!(p(&["get", "pods", "--"]), None);
        assert_eq!(p(&["explain", "pods", ""]), None);
        assert_eq!(p(&["logs", "web", ""]), None);
        assert_eq!(p(&["apply", ""]), None);
        assert_eq!(p(&[]), None);
    }
}
