#!/usr/bin/env bash
# The structure checks a reviewer would otherwise do by hand, over the product crates' sources
# (<crate>/src/**/*.rs of backend, service, ingest, consumer, operator and bench; never a crate's
# tests/ directory nor the tests crate):
#
#   (a) no source file is longer than 800 lines (STRUCTURE_MAX_LINES);
#   (b) no import cycle between the modules of one crate, at file granularity.
#
# An edge A -> B is a path in A's code (comments and string literals do not count) that starts
# with `crate::` or `super::` and names something in B: `use crate::b::X`, `crate::b::f()`,
# `use super::{self, Y}`, `super::Y` (an item defined in the parent is an edge to the parent's
# file). The target is the longest prefix of the path that is a module file (src/b.rs or
# src/b/mod.rs; src/lib.rs, or src/main.rs without a lib.rs, for `crate`); a reference into the
# file's own inline modules (`mod tests { use super::*; }`) is no edge. A parent's `mod child;`
# and its relative paths (`child::X`, `pub use child::X`) are no edges either, so a parent that
# re-exports its children while they use its items is no cycle. src/bin/*.rs and a main.rs beside
# a lib.rs are crates of their own and take part in the size check only.
#
# Usage: hack/structure-check.sh [ROOT]       check ROOT (default: this repository)
#        hack/structure-check.sh --self-test  prove on fixture crates that both checks fire
# Prints one `structure-check: FAIL ...` line per finding (a cycle with the file:line of each of
# its edges) and exits 1, or prints a one-line summary and exits 0.
set -euo pipefail

MAX_LINES=${STRUCTURE_MAX_LINES:-800}
CRATES=${STRUCTURE_CHECK_CRATES:-backend service ingest consumer operator bench}

# The tokenizer and the module graph. Input lines: crate <TAB> path-in-src <TAB> file to read.
read -r -d '' GRAPH_AWK <<'AWK' || true
function emit(t, ln) { n++; tok[n] = t; tln[n] = ln }

# Splits `path` into tok[1..n] (identifiers, `::` and single characters), dropping comments,
# string, char and byte literals, lifetimes and numbers.
function tokenize(path,    line, ln, i, L, c, c2, m, id, nc, hs, st, depth, closer) {
  n = 0; ln = 0; st = 0; depth = 0; closer = ""
  while ((getline line < path) > 0) {
    ln++; i = 1; L = length(line)
    while (i <= L) {
      if (st == 1) {                                   # block comment (they nest)
        c2 = substr(line, i, 2)
        if (c2 == "*/") { depth--; i += 2; if (depth == 0) st = 0; continue }
        if (c2 == "/*") { depth++; i += 2; continue }
        i++; continue
      }
      if (st == 2) {                                   # "string"
        c = substr(line, i, 1)
        if (c == "\\") { i += 2; continue }
        if (c == "\"") st = 0
        i++; continue
      }
      if (st == 3) {                                   # r#"raw string"#
        m = index(substr(line, i), closer)
        if (m == 0) { i = L + 1; continue }
        i += m - 1 + length(closer); st = 0; continue
      }
      c = substr(line, i, 1)
      if (c == " " || c == "\t" || c == "\r") { i++; continue }
      c2 = substr(line, i, 2)
      if (c2 == "//") break
      if (c2 == "/*") { st = 1; depth = 1; i += 2; continue }
      if (c == "\"") { st = 2; i++; continue }
      if (c == "'") {                                  # 'c', '\n', or a lifetime 'a
        if (substr(line, i + 1, 1) == "\\") {
          m = index(substr(line, i + 3), "'"); i = m ? i + 3 + m : L + 1; continue
        }
        if (match(substr(line, i + 1), /^[A-Za-z_][A-Za-z0-9_]*/)) {
          if (substr(line, i + 1 + RLENGTH, 1) == "'") i += RLENGTH + 2
          else i += RLENGTH + 1
          continue
        }
        m = index(substr(line, i + 1), "'"); i = m ? i + m + 1 : L + 1; continue
      }
      if (c ~ /[0-9]/) {
        match(substr(line, i), /^[0-9][A-Za-z0-9_]*/); i += RLENGTH; continue
      }
      if (match(substr(line, i), /^[A-Za-z_][A-Za-z0-9_]*/)) {
        id = substr(line, i, RLENGTH); i += RLENGTH; nc = substr(line, i, 1)
        if (id == "r" && nc == "#" && substr(line, i + 1, 1) ~ /[A-Za-z_]/) {   # r#ident
          match(substr(line, i + 1), /^[A-Za-z_][A-Za-z0-9_]*/)
          emit(substr(line, i + 1, RLENGTH), ln); i += 1 + RLENGTH; continue
        }
        if ((id == "r" || id == "br" || id == "cr") && (nc == "\"" || nc == "#")) {
          hs = ""
          while (substr(line, i, 1) == "#") { hs = hs "#"; i++ }
          if (substr(line, i, 1) == "\"") { st = 3; closer = "\"" hs; i++ }
          continue
        }
        if ((id == "b" || id == "c") && nc == "\"") { st = 2; i++; continue }
        if (id == "b" && nc == "'") {
          if (substr(line, i + 1, 1) == "\\") { m = index(substr(line, i + 3), "'"); i = m ? i + 3 + m : L + 1 }
          else { m = index(substr(line, i + 1), "'"); i = m ? i + m + 1 : L + 1 }
          continue
        }
        emit(id, ln); continue
      }
      if (c2 == "::") { emit("::", ln); i += 2; continue }
      emit(c, ln); i++
    }
  }
  close(path)
}

function parent(p) {
  if (index(p, "::") == 0) return ""
  match(p, /::[^:]*$/)
  return substr(p, 1, RSTART - 1)
}

# The file of the module that `path` (crate::..., super::...) names from module `cur`.
function resolve(crate, path, cur,    segs, ns, k, abs) {
  ns = split(path, segs, "::")
  k = 1
  if (segs[1] == "crate") { abs = ""; k = 2 }
  else {
    abs = cur
    while (k <= ns && segs[k] == "super") { if (abs == "") return ""; abs = parent(abs); k++ }
  }
  for (; k <= ns; k++) abs = abs == "" ? segs[k] : abs "::" segs[k]
  while (1) {
    if ((crate SUBSEP abs) in modfile) return modfile[crate SUBSEP abs]
    if (abs == "") return ""
    abs = parent(abs)
  }
}

function leaf(crate, file, path, cur, ln,    target, key) {
  target = resolve(crate, path, cur)
  if (target == "" || target == file) return
  key = crate SUBSEP file SUBSEP target
  if (key in evidence) return
  evidence[key] = "src/" file ":" ln " " path
  adj[crate SUBSEP file] = adj[crate SUBSEP file] " " target
}

# Finds the paths of the tokenized file and records its edges.
function scan(crate, file, cm,    i, j, t, depth, msp, mname, mdepth, cur, k, p, sp, stack, pending) {
  depth = 0; msp = 0
  for (i = 1; i <= n; i++) {
    t = tok[i]
    if (t == "mod" && tok[i + 1] ~ /^[A-Za-z_]/ && tok[i + 2] == "{") {
      msp++; mname[msp] = tok[i + 1]; mdepth[msp] = depth + 1; i++; continue
    }
    if (t == "{") { depth++; continue }
    if (t == "}") { if (msp > 0 && mdepth[msp] == depth) msp--; depth--; continue }
    if ((t != "crate" && t != "super") || tok[i + 1] != "::" || tok[i - 1] == "$" || tok[i - 1] == "::") continue
    cur = cm
    for (k = 1; k <= msp; k++) cur = cur == "" ? mname[k] : cur "::" mname[k]
    p = t; j = i + 1
    while (tok[j] == "::" && (tok[j + 1] ~ /^[A-Za-z_]/)) { p = p "::" tok[j + 1]; j += 2 }
    if (tok[j] == "::" && tok[j + 1] == "{") {         # a use tree: crate::{a::X, b::{self, Y}}
      sp = 1; stack[1] = p; pending = 0; j += 2
      for (; j <= n && sp > 0; j++) {
        t = tok[j]
        if (t == "as") { j++; continue }
        if (t == "self" || t == "*") { pending = 1; continue }
        if (t ~ /^[A-Za-z_]/) { p = p "::" t; pending = 1; continue }
        if (t == "{") { sp++; stack[sp] = p; pending = 0; continue }
        if (t == "," || t == "}") {
          if (pending) leaf(crate, file, p, cur, tln[i])
          pending = 0
          if (t == "}") sp--
          if (sp > 0) p = stack[sp]
        }
      }
      i = j - 1
      continue
    }
    leaf(crate, file, p, cur, tln[i])
    i = j - 1
  }
}

# The shortest cycle through `s` as "a -> b -> ... -> a", or "" when there is none.
function cycle_through(crate, s,    q, head, tail, u, vs, nv, k, v, from, seen, path, x) {
  head = 1; tail = 1; q[1] = s; seen[s] = 1
  while (head <= tail) {
    u = q[head++]
    nv = split(adj[crate SUBSEP u], vs, " ")
    for (k = 1; k <= nv; k++) {
      v = vs[k]
      if (v == s) {
        path = s
        for (x = u; x != s; x = from[x]) path = x " -> " path
        return s " -> " path
      }
      if (!(v in seen)) { seen[v] = 1; from[v] = u; q[++tail] = v }
    }
  }
  return ""
}

function reaches(crate, s, t,    q, head, tail, u, vs, nv, k, v, seen) {
  head = 1; tail = 1; q[1] = s; seen[s] = 1
  while (head <= tail) {
    u = q[head++]
    nv = split(adj[crate SUBSEP u], vs, " ")
    for (k = 1; k <= nv; k++) {
      v = vs[k]
      if (v == t) return 1
      if (!(v in seen)) { seen[v] = 1; q[++tail] = v }
    }
  }
  return 0
}

BEGIN { FS = "\t" }
{
  crate = $1; file = $2
  nfiles++; fcrate[nfiles] = crate; fpath[nfiles] = file; fread[nfiles] = $3
  if (!(crate in seen_crate)) { seen_crate[crate] = 1; crates[++ncrates] = crate }
  m = file
  if (m ~ /^bin\// ) { skip[nfiles] = 1; next }
  if (m == "lib.rs" || m == "main.rs") {
    if (m == "main.rs" && (crate SUBSEP "") in modfile) { skip[nfiles] = 1; next }
    if (m == "lib.rs" && (crate SUBSEP "") in modfile) {      # main.rs came first: lib.rs wins
      for (k = 1; k < nfiles; k++) if (fcrate[k] == crate && fpath[k] == "main.rs") skip[k] = 1
    }
    modfile[crate SUBSEP ""] = m; modof[nfiles] = ""; next
  }
  sub(/\/mod\.rs$/, "", m); sub(/\.rs$/, "", m); gsub(/\//, "::", m)
  modfile[crate SUBSEP m] = file; modof[nfiles] = m
}
END {
  for (f = 1; f <= nfiles; f++) {
    if (skip[f]) continue
    tokenize(fread[f])
    scan(fcrate[f], fpath[f], modof[f])
    nodes[fcrate[f]] = nodes[fcrate[f]] " " fpath[f]
  }
  for (c = 1; c <= ncrates; c++) {
    crate = crates[c]
    nn = split(nodes[crate], node, " ")
    for (a = 1; a <= nn; a++) {
      s = node[a]
      if ((crate SUBSEP s) in covered) continue
      cyc = cycle_through(crate, s)
      if (cyc == "") continue
      members = ""
      for (b = 1; b <= nn; b++) {
        t = node[b]
        if (t == s || (reaches(crate, s, t) && reaches(crate, t, s))) {
          covered[crate SUBSEP t] = 1
          if (index(" " cyc " ", " " t " ") == 0) members = members " src/" t
        }
      }
      ne = split(cyc, hop, " -> ")
      shown = ""
      for (e = 1; e <= ne; e++) shown = shown (e > 1 ? " -> " : "") "src/" hop[e]
      printf "structure-check: FAIL import cycle in %s: %s\n", crate, shown
      if (members != "") printf "    (the same strongly connected set also holds:%s)\n", members
      for (e = 1; e < ne; e++) printf "    %s\n", evidence[crate SUBSEP hop[e] SUBSEP hop[e + 1]]
    }
  }
}
AWK

# Checks the crates of $CRATES under $1; prints the findings, returns 1 if there are any.
check() {
  local root=$1 crate file lines status=0 nfiles=0 listing
  listing=$(mktemp)
  for crate in $CRATES; do
    [[ -d "$root/$crate/src" ]] || { echo "structure-check: FAIL no $crate/src under $root"; status=1; continue; }
    while IFS= read -r file; do
      nfiles=$((nfiles + 1))
      lines=$(wc -l < "$root/$crate/src/$file")
      if ((lines > MAX_LINES)); then
        echo "structure-check: FAIL $crate/src/$file has $lines lines (limit $MAX_LINES): split it by concern"
        status=1
      fi
      printf '%s\t%s\t%s\n' "$crate" "$file" "$root/$crate/src/$file" >> "$listing"
    done < <(cd "$root/$crate/src" && find . -name '*.rs' -type f | sed 's|^\./||' | LC_ALL=C sort)
  done
  local cycles
  cycles=$(LC_ALL=C awk "$GRAPH_AWK" "$listing")
  rm -f "$listing"
  if [[ -n "$cycles" ]]; then
    printf '%s\n' "$cycles"
    status=1
  fi
  if ((status == 0)); then
    echo "structure-check: ok ($nfiles files in $CRATES: none over $MAX_LINES lines, no import cycle)"
  fi
  return "$status"
}

# Fixture crates: `bad` has one file over the limit and two cycles (through `crate::` and through
# `super::`), `good` has what must not count: a parent re-exporting a child that uses the parent,
# inline test modules, paths in comments and literals, a file of exactly the limit, a long file
# in tests/.
self_test() {
  local dir out status=0 expected
  dir=$(mktemp -d)
  trap 'rm -rf "$dir"' RETURN
  mkdir -p "$dir/bad/src/parent" "$dir/good/src/clean" "$dir/good/tests"
  cat > "$dir/bad/src/lib.rs" <<'EOF'
mod a;
mod b;
mod big;
mod parent;
EOF
  cat > "$dir/bad/src/a.rs" <<'EOF'
use crate::b::B;
pub fn g() -> B { B }
EOF
  cat > "$dir/bad/src/b.rs" <<'EOF'
pub struct B;
pub fn f() -> B { crate::a::g() }
EOF
  cat > "$dir/bad/src/parent/mod.rs" <<'EOF'
mod child;
pub struct P;
pub fn make() -> crate::parent::child::C { child::C(P) }
EOF
  cat > "$dir/bad/src/parent/child.rs" <<'EOF'
use super::{self, P};
pub struct C(pub P);
EOF
  for ((i = 0; i <= MAX_LINES; i++)); do echo "// line $i"; done > "$dir/bad/src/big.rs"
  cat > "$dir/good/src/lib.rs" <<'EOF'
//! A doc comment naming crate::clean::inner::I.
mod clean;
mod exact;
pub use clean::Base;
EOF
  cat > "$dir/good/src/clean/mod.rs" <<'EOF'
mod inner;
pub use inner::I;
pub use self::inner::make;
pub struct Base<'a>(pub &'a str);
// use crate::clean::inner::I;
/* crate::clean::inner::make() /* nested */ crate::clean::inner */
pub const S: &str = "crate::clean::inner::I \" super::inner";
pub const R: &str = r##"crate::clean::inner "# crate::clean::inner"##;
pub const Q: char = '"';
pub const E: char = '\'';
pub fn base() -> Base<'static> { Base("x") }
macro_rules! m { () => { $crate::clean::inner::make() }; }
EOF
  cat > "$dir/good/src/clean/inner.rs" <<'EOF'
use super::Base;
pub struct I(pub Base<'static>);
pub fn make() -> I { I(super::base()) }
#[cfg(test)]
mod tests {
    use super::*;
    use crate::clean::inner::make;
    #[test]
    fn works() { let _ = make(); let _ = super::super::Base("y"); }
}
EOF
  for ((i = 1; i <= MAX_LINES; i++)); do echo "// line $i"; done > "$dir/good/src/exact.rs"
  for ((i = 0; i <= MAX_LINES + 100; i++)); do echo "// line $i"; done > "$dir/good/tests/long.rs"

  if out=$(CRATES="good" check "$dir"); then
    echo "self-test: ok   the good fixture passes: $out"
  else
    echo "self-test: FAIL the good fixture was refused:"; printf '%s\n' "$out"; status=1
  fi
  out=$(CRATES="bad good" check "$dir") && { echo "self-test: FAIL the bad fixture passed"; status=1; }
  expected=(
    "structure-check: FAIL bad/src/big.rs has $((MAX_LINES + 1)) lines (limit $MAX_LINES): split it by concern"
    "structure-check: FAIL import cycle in bad: src/a.rs -> src/b.rs -> src/a.rs"
    "    src/a.rs:1 crate::b::B"
    "    src/b.rs:2 crate::a::g"
    "structure-check: FAIL import cycle in bad: src/parent/child.rs -> src/parent/mod.rs -> src/parent/child.rs"
    "    src/parent/child.rs:1 super"
    "    src/parent/mod.rs:3 crate::parent::child::C"
  )
  if [[ "$out" == "$(printf '%s\n' "${expected[@]}")" ]]; then
    echo "self-test: ok   the bad fixture is refused with exactly its oversized file and its two cycles"
  else
    echo "self-test: FAIL the bad fixture's report differs; got:"; printf '%s\n' "$out"
    echo "expected:"; printf '%s\n' "${expected[@]}"; status=1
  fi
  return "$status"
}

if [[ "${1:-}" == "--self-test" ]]; then
  self_test
else
  check "${1:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
fi
