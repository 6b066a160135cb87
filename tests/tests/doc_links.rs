//! The documentation's relative links lead somewhere: every `[text](path#anchor)` in the README,
//! `docs/` and the other Markdown files of the repository names a file that exists and, with an
//! anchor, a heading of that file (as GitHub makes anchors of headings). Moving a section
//! between pages breaks links silently otherwise.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

/// The Markdown files whose links are checked, relative to the repository root.
fn markdown_files(root: &Path) -> Vec<PathBuf> {
    let mut files = vec![root.join("README.md"), root.join("BENCHMARKS.md")];
    for dir in ["docs", "bench"] {
        let Ok(entries) = fs::read_dir(root.join(dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|ext| ext == "md") {
                files.push(path);
            }
        }
    }
    files.retain(|path| path.is_file());
    files.sort();
    files
}

/// The lines of a Markdown text outside fenced code blocks.
fn prose_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let mut in_fence = false;
    text.lines().enumerate().filter(move |(_, line)| {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            return false;
        }
        !in_fence
    })
}

/// GitHub's anchor of a heading: lower case, punctuation other than `-` and `_` dropped, spaces
/// made hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// Every anchor a Markdown text has: its headings' slugs, repeated ones numbered as GitHub does.
fn anchors(text: &str) -> HashSet<String> {
    let mut found = HashSet::new();
    for (_, line) in prose_lines(text) {
        let Some(heading) = line.strip_prefix('#') else {
            continue;
        };
        let heading = heading.trim_start_matches('#');
        if !heading.starts_with(' ') {
            continue;
        }
        let base = slug(heading);
        let mut anchor = base.clone();
        let mut n = 0;
        while found.contains(&anchor) {
            n += 1;
            anchor = format!("{base}-{n}");
        }
        found.insert(anchor);
    }
    found
}

/// The targets of the inline links `[text](target)` of one line.
fn link_targets(line: &str) -> Vec<&str> {
    let mut targets = Vec::new();
    let mut rest = line;
    while let Some(start) = rest.find("](") {
        let after = &rest[start + 2..];
        let Some(end) = after.find(')') else { break };
        targets.push(after[..end].trim());
        rest = &after[end..];
    }
    targets
}

/// Every broken relative link of the files, as `file:line: target: why`.
fn broken_links(root: &Path, files: &[PathBuf]) -> Vec<String> {
    let mut broken = Vec::new();
    for file in files {
        let text = match fs::read_to_string(file) {
            Ok(text) => text,
            Err(error) => {
                broken.push(format!("{}: cannot read: {error}", file.display()));
                continue;
            }
        };
        let shown = file
            .strip_prefix(root)
            .unwrap_or(file)
            .display()
            .to_string();
        for (index, line) in prose_lines(&text) {
            for target in link_targets(line) {
                if target.contains("://") || target.starts_with("mailto:") || target.is_empty() {
                    continue;
                }
                let (path, anchor) = match target.split_once('#') {
                    Some((path, anchor)) => (path, Some(anchor)),
                    None => (target, None),
                };
                let linked = if path.is_empty() {
                    file.clone()
                } else {
                    file.parent().unwrap_or(root).join(path)
                };
                let whereabouts = format!("{shown}:{}: {target}", index + 1);
                if !linked.exists() {
                    broken.push(format!("{whereabouts}: no such file"));
                    continue;
                }
                let Some(anchor) = anchor else { continue };
                match fs::read_to_string(&linked) {
                    Ok(linked_text) if anchors(&linked_text).contains(anchor) => {}
                    Ok(_) => broken.push(format!("{whereabouts}: no such heading")),
                    Err(error) => broken.push(format!("{whereabouts}: cannot read: {error}")),
                }
            }
        }
    }
    broken
}

#[test]
fn every_relative_link_of_the_documentation_resolves() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the repository root")
        .to_path_buf();
    let files = markdown_files(&root);
    assert!(
        files.iter().any(|file| file.ends_with("README.md")) && files.len() > 5,
        "expected the README and the docs pages, found {files:?}"
    );
    let broken = broken_links(&root, &files);
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn a_missing_file_or_heading_is_reported() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let page = dir.path().join("page.md");
    let other = dir.path().join("other.md");
    fs::write(
        &other,
        "# Other\n\n## Quick start on kind (needs Docker)\n\n## `POST /metrics`\n",
    )
    .expect("write other.md");
    fs::write(
        &page,
        "# Page\n\n[ok](other.md#quick-start-on-kind-needs-docker) [ok](other.md#post-metrics) \
         [ok](#page) [web](https://example.com/x#y)\n\n```\n[in code](gone.md)\n```\n\
         [gone](gone.md) [bad](other.md#nowhere) [self](#nowhere-here)\n",
    )
    .expect("write page.md");
    let broken = broken_links(dir.path(), &[page]);
    assert_eq!(
        broken,
        vec![
            "page.md:8: gone.md: no such file".to_string(),
            "page.md:8: other.md#nowhere: no such heading".to_string(),
            "page.md:8: #nowhere-here: no such heading".to_string(),
        ]
    );
}
