//! peerchat-docgen OUTDIR: writes the man pages (OUTDIR/man/chatd.8, registryd.8, chatctl.1) and
//! chatctl's shell completions (OUTDIR/completions/chatctl.bash, _chatctl, chatctl.fish), all
//! generated from the same clap definitions the programs parse with.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::CommandFactory;
use clap_complete::Shell;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args_os().skip(1);
    let Some(out) = args.next().map(PathBuf::from) else {
        bail!("usage: peerchat-docgen OUTDIR");
    };
    let man = out.join("man");
    let completions = out.join("completions");
    std::fs::create_dir_all(&man).with_context(|| format!("creating {}", man.display()))?;
    std::fs::create_dir_all(&completions)
        .with_context(|| format!("creating {}", completions.display()))?;
    write_man(&man, chatd::cli::Args::command(), "8")?;
    write_man(&man, registryd::cli::Args::command(), "8")?;
    write_man(&man, chatctl::cli::Cli::command(), "1")?;
    for (shell, file) in [
        (Shell::Bash, "chatctl.bash"),
        (Shell::Zsh, "_chatctl"),
        (Shell::Fish, "chatctl.fish"),
    ] {
        let path = completions.join(file);
        let mut f =
            std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        clap_complete::generate(shell, &mut chatctl::cli::Cli::command(), "chatctl", &mut f);
    }
    eprintln!(
        "wrote man pages to {} and completions to {}",
        man.display(),
        completions.display()
    );
    Ok(())
}

fn write_man(dir: &Path, cmd: clap::Command, section: &str) -> anyhow::Result<()> {
    let name = cmd.get_name().to_string();
    let path = dir.join(format!("{name}.{section}"));
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd)
        .section(section)
        .render(&mut buf)?;
    std::fs::write(&path, buf).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
