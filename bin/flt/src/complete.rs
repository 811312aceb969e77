//! Shell completion: clap's scripts for the verbs and flags, and for bash
//! a function around clap's that completes kinds and the names of live
//! objects (`flt get deploy <TAB>`, `flt logs <TAB>`, `flt describe
//! po/<TAB>`) by asking the masters through the hidden `flt __complete
//! [KIND] [-n NS] [-A]`, which prints one name a line and stays silent on
//! errors.

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
               elif [[ $verb == rollout || $verb == set ]]; then verb="$verb-$w"
               else ((nargs++)); [[ $nargs -eq 1 ]] && kind=$w; fi ;;
        esac
    done
    [[ $cur == -* ]] && return 1
    case "$verb" in
        logs|exec|attach)
            [[ $nargs -eq 0 ]] || return 1
            kind=pods ;;
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

/// Print the completion script for `shell`.
pub fn completion(shell: Shell) {
    let sh = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut script = Vec::new();
    clap_complete::generate(sh, &mut crate::Cli::command(), "flt", &mut script);
    if shell == Shell::Bash {
        script.extend_from_slice(BASH_NAMES.as_bytes());
    }
    // A reader that stops early (`| head`) is not an error.
    let _ = std::io::Write::write_all(&mut std::io::stdout(), &script);
}

/// `flt __complete [KIND]`: the kinds, or the names of KIND's objects.
pub async fn names(ctx: &Ctx, a: &CompleteArgs) -> Result<()> {
    let Some(kind) = &a.kind else {
        for r in RESOURCES {
            println!("{}", r.plural);
        }
        return Ok(());
    };
    // Completion must not print errors into the user's command line.
    let Some(info) = registry::lookup(kind) else {
        return Ok(());
    };
    let ns = if a.all_namespaces { "" } else { ctx.ns(info) };
    if let Ok(l) = ctx
        .client
        .list(info.plural, ns, &ListParams::default())
        .await
    {
        let mut names: Vec<&str> = l.items.iter().map(name_of).collect();
        names.sort_unstable();
        names.dedup();
        for n in names {
            println!("{n}");
        }
    }
    Ok(())
}
