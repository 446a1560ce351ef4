//! The README's quoted outputs are the binary's (issue 25.14): each block after a
//! `<!-- readme-check: ARGS -->` line is what `contactsyncd ARGS` prints (stdout, then
//! stderr), run in the checkout with an empty environment, so an example cannot drift from
//! the program again. `CONTACTSYNCD_BLESS_README=1 cargo test --test it readme::` rewrites
//! the blocks after a deliberate change of output.

use crate::support::{contactsyncd, repo_file, stderr, stdout};

const MARK: &str = "<!-- readme-check: ";

/// (args, the block's first line, its end line) for every marked block.
fn checked_blocks(readme: &str) -> Vec<(String, usize, usize)> {
    let lines: Vec<&str> = readme.lines().collect();
    let mut blocks = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(args) = line.strip_prefix(MARK).and_then(|r| r.strip_suffix(" -->")) else {
            continue;
        };
        assert!(
            lines.get(i + 1).is_some_and(|l| l.starts_with("```")),
            "line {}: a code block follows the readme-check mark",
            i + 2
        );
        let end = (i + 2..lines.len())
            .find(|&j| lines[j] == "```")
            .unwrap_or_else(|| panic!("line {}: the block ends", i + 2));
        blocks.push((args.to_owned(), i + 2, end));
    }
    blocks
}

fn output_of(args: &str) -> String {
    let args: Vec<&str> = args.split_whitespace().collect();
    let output = contactsyncd(&args, &[]);
    format!("{}{}", stdout(&output), stderr(&output))
}

#[test]
fn the_readmes_outputs_are_the_binarys() {
    let path = repo_file("README.md");
    let readme = std::fs::read_to_string(&path).unwrap();
    let blocks = checked_blocks(&readme);
    assert!(
        blocks.len() >= 3,
        "the README marks its outputs: {blocks:?}"
    );
    let lines: Vec<&str> = readme.lines().collect();
    let bless = std::env::var_os("CONTACTSYNCD_BLESS_README").is_some();
    let mut blessed: Vec<String> = Vec::new();
    let mut copied = 0;
    let mut wrong = Vec::new();
    for (args, start, end) in blocks {
        let actual = output_of(&args);
        let shown = lines[start..end].join("\n");
        if shown.trim_end() != actual.trim_end() {
            wrong.push(format!(
                "README line {start}, `contactsyncd {args}`:\n--- README\n{shown}\n--- binary\n{actual}"
            ));
        }
        blessed.extend(lines[copied..start].iter().map(|l| (*l).to_owned()));
        blessed.push(actual.trim_end().to_owned());
        copied = end;
    }
    if bless {
        blessed.extend(lines[copied..].iter().map(|l| (*l).to_owned()));
        std::fs::write(&path, blessed.join("\n") + "\n").unwrap();
        return;
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
}
