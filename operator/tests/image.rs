//! The Dockerfile's runtime stage and the local image recipe (`hack/image.sh`, which builds the
//! image without Docker for the single-node cluster) must agree on the user, the binaries' paths,
//! the entrypoint, the command and the ports. The Dockerfile is read here independently of the
//! script's own parser and compared with:
//!
//! - what the script says it takes from it (`hack/image.sh recipe`);
//! - the build context it assembles (`hack/image.sh context`, with stand-in binaries: the
//!   generated Containerfile, the root filesystem's files, owners and modes), needing no buildah;
//! - the built image's config and files (`hack/image.sh build`, buildah): the archive of
//!   IMAGE_ARCHIVE when set, else one built here from stand-in binaries (ignored by plain
//!   `cargo test`: it needs root and buildah, which hack/image.sh installs with apt-get; `make
//!   test` runs it).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use metricstream_operator::reconcile::build::RUN_AS_USER;
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the operator crate lives in the workspace")
        .to_path_buf()
}

fn run(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("running {command:?}: {error}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn image_sh(args: &[&str]) -> BTreeMap<String, String> {
    let output = run(Command::new("bash")
        .arg(repo().join("hack/image.sh"))
        .args(args)
        .current_dir(repo()));
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
}

/// A Dockerfile's instructions per stage: (KEYWORD, arguments), continuation lines joined,
/// comments dropped.
fn stages(text: &str) -> Vec<Vec<(String, String)>> {
    let mut stages: Vec<Vec<(String, String)>> = Vec::new();
    let mut pending = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') {
            continue;
        }
        let (part, continues) = match trimmed.strip_suffix('\\') {
            Some(part) => (part.trim_end(), true),
            None => (trimmed, false),
        };
        if !pending.is_empty() && !part.is_empty() {
            pending.push(' ');
        }
        pending.push_str(part);
        if continues || pending.is_empty() {
            continue;
        }
        let instruction = std::mem::take(&mut pending);
        let (keyword, arguments) = instruction
            .split_once(char::is_whitespace)
            .unwrap_or((&instruction, ""));
        let keyword = keyword.to_ascii_uppercase();
        if keyword == "FROM" {
            stages.push(Vec::new());
        }
        if let Some(stage) = stages.last_mut() {
            stage.push((keyword, arguments.trim().to_string()));
        }
    }
    stages
}

/// What an image built from a stage must have.
#[derive(Debug, PartialEq)]
struct Runtime {
    user: String,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    /// "8080/tcp", sorted.
    ports: Vec<String>,
    labels: BTreeMap<String, String>,
    /// The destination of the COPY of the binaries.
    bin_dir: String,
}

fn last<'a>(stage: &'a [(String, String)], keyword: &str) -> Option<&'a str> {
    stage
        .iter()
        .rev()
        .find(|(k, _)| k == keyword)
        .map(|(_, arguments)| arguments.as_str())
}

fn exec_form(stage: &[(String, String)], keyword: &str) -> Vec<String> {
    let arguments = last(stage, keyword).unwrap_or_else(|| panic!("the stage has no {keyword}"));
    serde_json::from_str(arguments).unwrap_or_else(|error| {
        panic!("{keyword} {arguments} is not in exec form (the image has no shell): {error}")
    })
}

/// `key="value" key2="value 2"` of LABEL instructions.
fn labels(stage: &[(String, String)]) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    for (_, arguments) in stage.iter().filter(|(k, _)| k == "LABEL") {
        let mut rest = arguments.as_str();
        while let Some((key, after)) = rest.split_once("=\"") {
            let (value, after) = after.split_once('"').expect("a closing quote");
            labels.insert(key.trim().to_string(), value.to_string());
            rest = after;
        }
    }
    labels
}

fn runtime(stage: &[(String, String)], copy_dest_of: impl Fn(&str) -> bool) -> Runtime {
    let mut ports: Vec<String> = last(stage, "EXPOSE")
        .unwrap_or_default()
        .split_whitespace()
        .map(|port| {
            if port.contains('/') {
                port.to_string()
            } else {
                format!("{port}/tcp")
            }
        })
        .collect();
    ports.sort();
    let copies: Vec<&str> = stage
        .iter()
        .filter(|(k, arguments)| k == "COPY" && copy_dest_of(arguments))
        .map(|(_, arguments)| arguments.as_str())
        .collect();
    assert_eq!(copies.len(), 1, "one COPY of the binaries: {copies:?}");
    Runtime {
        user: last(stage, "USER").expect("a USER").to_string(),
        entrypoint: exec_form(stage, "ENTRYPOINT"),
        cmd: exec_form(stage, "CMD"),
        ports,
        labels: labels(stage),
        bin_dir: copies[0]
            .split_whitespace()
            .last()
            .expect("a destination")
            .to_string(),
    }
}

fn dockerfile_text() -> String {
    fs::read_to_string(repo().join("Dockerfile")).expect("read the Dockerfile")
}

/// The Dockerfile's final stage.
fn dockerfile_runtime() -> Runtime {
    let stages = stages(&dockerfile_text());
    runtime(stages.last().expect("a FROM"), |arguments| {
        arguments.starts_with("--from=")
    })
}

/// The binaries the Dockerfile's build stage copies out (`target/release/NAME`), sorted.
fn dockerfile_binaries() -> Vec<String> {
    let text = dockerfile_text();
    let mut names: Vec<String> = text
        .split_whitespace()
        .filter_map(|word| word.strip_prefix("target/release/"))
        .map(str::to_string)
        .collect();
    names.sort();
    names.dedup();
    names
}

fn binary_paths(runtime: &Runtime) -> Vec<String> {
    dockerfile_binaries()
        .iter()
        .map(|name| format!("{}/{name}", runtime.bin_dir.trim_end_matches('/')))
        .collect()
}

fn uid_gid(user: &str) -> (u32, u32) {
    let (uid, gid) = user
        .split_once(':')
        .unwrap_or_else(|| panic!("USER {user} is not uid:gid"));
    (
        uid.parse().expect("a numeric uid"),
        gid.parse().expect("a numeric gid"),
    )
}

/// One entry of `tar --numeric-owner -tvf`.
#[derive(Debug)]
struct Entry {
    mode: String,
    uid: u32,
    gid: u32,
    /// Absolute, without a trailing slash (the root is "/").
    path: String,
}

fn tar_listing(archive: &Path) -> Vec<Entry> {
    let output = run(Command::new("tar")
        .args(["--numeric-owner", "-tvf"])
        .arg(archive));
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| {
            // mode uid/gid size date time name [-> target | link to target]
            let mut words = line.split_whitespace();
            let mode = words.next().expect("a mode").to_string();
            let owner = words.next().expect("an owner");
            let name = line
                .split_whitespace()
                .skip(5)
                .collect::<Vec<_>>()
                .join(" ");
            let name = name.split(" -> ").next().unwrap_or_default();
            let name = name.split(" link to ").next().unwrap_or_default();
            let name = name.trim_start_matches("./").trim_start_matches('/');
            let (uid, gid) = owner
                .split_once('/')
                .unwrap_or_else(|| panic!("no uid/gid in the tar listing line {line}"));
            Entry {
                mode,
                uid: uid.parse().expect("a numeric uid"),
                gid: gid.parse().expect("a numeric gid"),
                path: format!("/{}", name.trim_end_matches('/')),
            }
        })
        .collect()
}

fn executable_by(entry: &Entry, (uid, gid): (u32, u32)) -> bool {
    let mode = entry.mode.as_bytes();
    mode[0] == b'-'
        && ((entry.uid == uid && mode[3] == b'x')
            || (entry.gid == gid && mode[6] == b'x')
            || mode[9] == b'x')
}

const SHELLS: [&str; 5] = [
    "/bin/sh",
    "/usr/bin/sh",
    "/bin/bash",
    "/usr/bin/bash",
    "/bin/busybox",
];

/// The image's files (`files`) have the binaries where the Dockerfile puts them, executable by
/// its user, the user's passwd entry, the dynamic loader, a /tmp, and no shell.
fn assert_files(what: &str, runtime: &Runtime, files: &[Entry], passwd: &str) {
    let user = uid_gid(&runtime.user);
    for path in binary_paths(runtime) {
        let entry = files
            .iter()
            .rev()
            .find(|entry| entry.path == path)
            .unwrap_or_else(|| panic!("{what} has no {path}"));
        assert!(
            executable_by(entry, user),
            "{what}: {path} ({} {}:{}) is not executable by {}",
            entry.mode,
            entry.uid,
            entry.gid,
            runtime.user
        );
    }
    assert!(
        binary_paths(runtime).contains(&runtime.entrypoint[0]),
        "the Dockerfile's entrypoint {} is not one of the binaries {:?}",
        runtime.entrypoint[0],
        binary_paths(runtime)
    );
    for shell in SHELLS {
        assert!(
            !files.iter().any(|entry| entry.path == shell),
            "{what} has a shell: {shell}"
        );
    }
    for needed in [
        "/lib64/ld-linux-x86-64.so.2",
        "/etc/ssl/certs/ca-certificates.crt",
    ] {
        assert!(
            files.iter().any(|entry| entry.path == needed),
            "{what} has no {needed}"
        );
    }
    let tmp = files
        .iter()
        .find(|entry| entry.path == "/tmp")
        .unwrap_or_else(|| panic!("{what} has no /tmp"));
    assert_eq!(tmp.mode, "drwxrwxrwt", "{what}: /tmp's mode");
    assert!(
        passwd.lines().any(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            fields.len() == 7 && fields[2] == user.0.to_string() && fields[3] == user.1.to_string()
        }),
        "{what}: /etc/passwd has no entry for {}:\n{passwd}",
        runtime.user
    );
}

fn extract(archive: &Path, member: &str, into: &Path) -> PathBuf {
    run(Command::new("tar")
        .arg("-xf")
        .arg(archive)
        .arg("-C")
        .arg(into)
        .arg(member));
    into.join(member.trim_start_matches("./"))
}

/// Stand-ins for the release binaries: copies of a small dynamically linked host executable
/// (the image's layout and config do not depend on what the binaries do).
fn stand_in_binaries(dir: &Path) -> PathBuf {
    let source = ["/usr/bin/true", "/bin/true"]
        .into_iter()
        .map(Path::new)
        .find(|path| path.exists())
        .expect("a `true` executable on this host");
    let bin = dir.join("bin");
    fs::create_dir_all(&bin).expect("create the stand-ins' directory");
    for name in dockerfile_binaries() {
        fs::copy(source, bin.join(&name)).expect("copy a stand-in binary");
    }
    bin
}

#[test]
fn image_recipe_takes_user_paths_entrypoint_and_cmd_from_the_dockerfile() {
    let runtime = dockerfile_runtime();
    assert_eq!(
        dockerfile_binaries(),
        [
            "metricstream-consumer",
            "metricstream-ingest",
            "metricstream-operator"
        ],
        "the binaries the Dockerfile builds"
    );
    assert_eq!(
        runtime.user,
        format!("{RUN_AS_USER}:{RUN_AS_USER}"),
        "the Dockerfile's USER and the workloads' runAsUser"
    );
    let recipe = image_sh(&["recipe"]);
    let get = |key: &str| {
        recipe
            .get(key)
            .unwrap_or_else(|| panic!("hack/image.sh recipe printed no {key}: {recipe:?}"))
            .clone()
    };
    assert_eq!(get("IMAGE_USER"), runtime.user, "the user");
    assert_eq!(
        serde_json::from_str::<Vec<String>>(&get("IMAGE_ENTRYPOINT")).expect("JSON"),
        runtime.entrypoint,
        "the entrypoint"
    );
    assert_eq!(
        serde_json::from_str::<Vec<String>>(&get("IMAGE_CMD")).expect("JSON"),
        runtime.cmd,
        "the cmd"
    );
    let mut recipe_binaries: Vec<String> = get("IMAGE_BINARIES")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    recipe_binaries.sort();
    assert_eq!(
        recipe_binaries,
        binary_paths(&runtime),
        "the binaries' paths"
    );
    let mut recipe_ports: Vec<String> = get("IMAGE_EXPOSE")
        .split_whitespace()
        .map(|port| format!("{port}/tcp"))
        .collect();
    recipe_ports.sort();
    assert_eq!(recipe_ports, runtime.ports, "the exposed ports");
}

#[test]
fn image_build_context_has_the_dockerfile_layout_and_no_shell() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let bin = stand_in_binaries(dir.path());
    let out = dir.path().join("out");
    let printed = image_sh(&[
        "context",
        "--binaries",
        bin.to_str().expect("a UTF-8 path"),
        "--out",
        out.to_str().expect("a UTF-8 path"),
    ]);
    let context = PathBuf::from(&printed["CONTEXT"]);

    // The generated Containerfile builds the Dockerfile's runtime stage on the local rootfs.
    let containerfile =
        fs::read_to_string(context.join("Containerfile")).expect("read the Containerfile");
    let stages = stages(&containerfile);
    assert_eq!(stages.len(), 1, "one stage:\n{containerfile}");
    let generated = runtime(&stages[0], |arguments| arguments.starts_with("bin/"));
    let expected = dockerfile_runtime();
    assert_eq!(
        generated, expected,
        "the Containerfile hack/image.sh generates and the Dockerfile's runtime stage"
    );
    // The workloads' commands are bare binary names (metricstream-ingest): PATH must find them.
    let path = stages[0]
        .iter()
        .filter(|(k, _)| k == "ENV")
        .find_map(|(_, arguments)| arguments.strip_prefix("PATH="))
        .expect("the Containerfile sets PATH (the distroless base image does)");
    assert!(
        path.split(':')
            .any(|dir| dir == expected.bin_dir.trim_end_matches('/')),
        "PATH {path} does not hold {}",
        expected.bin_dir
    );

    // The files: the rootfs plus the binaries at the COPY's destination (COPY makes them root's,
    // with the build's modes).
    let mut files = tar_listing(&context.join("rootfs.tar"));
    for entry in fs::read_dir(context.join("bin")).expect("list bin/") {
        let entry = entry.expect("a bin/ entry");
        let mode = {
            use std::os::unix::fs::PermissionsExt;
            entry.metadata().expect("stat").permissions().mode()
        };
        let rwx = |bits: u32| {
            format!(
                "{}{}{}",
                if bits & 4 != 0 { 'r' } else { '-' },
                if bits & 2 != 0 { 'w' } else { '-' },
                if bits & 1 != 0 { 'x' } else { '-' }
            )
        };
        files.push(Entry {
            mode: format!("-{}{}{}", rwx(mode >> 6), rwx(mode >> 3), rwx(mode)),
            uid: 0,
            gid: 0,
            path: format!(
                "{}/{}",
                expected.bin_dir.trim_end_matches('/'),
                entry.file_name().to_string_lossy()
            ),
        });
    }
    let passwd = extract(&context.join("rootfs.tar"), "./etc/passwd", dir.path());
    let passwd = fs::read_to_string(passwd).expect("read etc/passwd");
    assert_files("the build context", &expected, &files, &passwd);
    let home = files
        .iter()
        .find(|entry| entry.path == "/home/nonroot")
        .expect("a home directory");
    assert_eq!(
        (home.uid, home.gid),
        uid_gid(&expected.user),
        "the home directory's owner"
    );
}

#[test]
#[ignore = "needs root and buildah (hack/image.sh installs it with apt-get); make test runs it"]
fn built_image_config_and_files_match_the_dockerfile() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let archive = match std::env::var_os("IMAGE_ARCHIVE") {
        Some(archive) if !archive.is_empty() => PathBuf::from(archive),
        _ => {
            let bin = stand_in_binaries(dir.path());
            let out = dir.path().join("out");
            let printed = image_sh(&[
                "build",
                "--binaries",
                bin.to_str().expect("a UTF-8 path"),
                "--tag",
                "localhost/metricstream:image-test",
                "--out",
                out.to_str().expect("a UTF-8 path"),
            ]);
            PathBuf::from(&printed["IMAGE_ARCHIVE"])
        }
    };
    let expected = dockerfile_runtime();

    // A docker-archive: manifest.json names the config and the layers.
    let manifest = extract(&archive, "manifest.json", dir.path());
    let manifest: Value =
        serde_json::from_str(&fs::read_to_string(manifest).expect("read manifest.json"))
            .expect("manifest.json is JSON");
    let config_name = manifest[0]["Config"].as_str().expect("a Config");
    let config = extract(&archive, config_name, dir.path());
    let config: Value = serde_json::from_str(&fs::read_to_string(config).expect("read the config"))
        .expect("the config is JSON");
    let config = &config["config"];
    let strings = |value: &Value| -> Vec<String> {
        value
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|item| item.as_str().expect("a string").to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut ports: Vec<String> = config["ExposedPorts"]
        .as_object()
        .map(|ports| ports.keys().cloned().collect())
        .unwrap_or_default();
    ports.sort();
    let labels: BTreeMap<String, String> = config["Labels"]
        .as_object()
        .map(|labels| {
            labels
                .iter()
                .filter(|(key, _)| expected.labels.contains_key(*key))
                .map(|(key, value)| (key.clone(), value.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default();
    let built = Runtime {
        user: config["User"].as_str().unwrap_or_default().to_string(),
        entrypoint: strings(&config["Entrypoint"]),
        cmd: strings(&config["Cmd"]),
        ports,
        labels,
        bin_dir: expected.bin_dir.clone(),
    };
    assert_eq!(
        built,
        expected,
        "the config of {} and the Dockerfile's runtime stage",
        archive.display()
    );
    let path = strings(&config["Env"])
        .into_iter()
        .find_map(|env| env.strip_prefix("PATH=").map(str::to_string))
        .expect("the image sets PATH");
    assert!(
        path.split(':')
            .any(|dir| dir == expected.bin_dir.trim_end_matches('/')),
        "the image's PATH {path} does not hold {}",
        expected.bin_dir
    );

    // The files of every layer, later layers last.
    let mut files = Vec::new();
    let layers_dir = dir.path().join("layers");
    fs::create_dir_all(&layers_dir).expect("create the layers' directory");
    for layer in manifest[0]["Layers"].as_array().expect("Layers") {
        let layer = extract(&archive, layer.as_str().expect("a layer"), &layers_dir);
        files.extend(tar_listing(&layer));
    }
    let mut passwd = String::new();
    for layer in manifest[0]["Layers"].as_array().expect("Layers") {
        let layer = layers_dir.join(layer.as_str().expect("a layer"));
        let output = Command::new("tar")
            .arg("-xOf")
            .arg(&layer)
            .arg("etc/passwd")
            .output()
            .expect("run tar");
        if output.status.success() {
            passwd = String::from_utf8_lossy(&output.stdout).into_owned();
        }
    }
    assert_files(
        &format!("the image {}", archive.display()),
        &expected,
        &files,
        &passwd,
    );
}
