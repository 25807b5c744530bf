//! The packaging files agree with pgvalet: the compose file and the ECS task definition, read as
//! the tools would, give configurations pgvalet loads, on the ports, paths and variable names
//! the config and the Dockerfile use.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use pgvalet::Config;
use serde_json::Value;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// docker-compose.yml as JSON, read by PyYAML from the test venv (`make venv`), with every
/// `${VAR:-default}` at its default, as compose reads it when no such variable is set.
fn compose() -> Value {
    let python = repo(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `make venv` (`make test` does it)",
        python.display()
    );
    let out = Command::new(python)
        .args([
            "-c",
            "import json, re, sys, yaml; text = re.sub(r'\\$\\{\\w+:-([^}]*)\\}', r'\\1', open(sys.argv[1]).read()); print(json.dumps(yaml.safe_load(text)))",
        ])
        .arg(repo("docker-compose.yml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `"127.0.0.1:6432:6432"` → (host port, container port).
fn port_pair(mapping: &Value) -> (u16, u16) {
    let parts: Vec<&str> = mapping.as_str().unwrap().rsplitn(3, ':').collect();
    (parts[1].parse().unwrap(), parts[0].parse().unwrap())
}

fn ports(service: &Value) -> Vec<(u16, u16)> {
    service["ports"]
        .as_array()
        .map(|p| p.iter().map(port_pair).collect())
        .unwrap_or_default()
}

fn env_of(service: &Value) -> Vec<(String, String)> {
    service["environment"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect()
}

/// The Dockerfile's final `ENV PGVALET_CONFIG`, `ENTRYPOINT` binary, `HEALTHCHECK` and `EXPOSE`.
struct Image {
    config: String,
    binary: String,
    health: Vec<String>,
    expose: Vec<u16>,
    user: String,
}

fn image() -> Image {
    let text = std::fs::read_to_string(repo("Dockerfile")).unwrap();
    let text = text.replace("\\\n", " ");
    let runtime = text.rsplit("\nFROM ").next().unwrap();
    let line = |word: &str| {
        runtime
            .lines()
            .find_map(|l| l.strip_prefix(word))
            .unwrap_or_else(|| panic!("no {word} in the runtime stage"))
            .trim()
            .to_owned()
    };
    let json_list = |s: &str| -> Vec<String> { serde_json::from_str(s).unwrap() };
    Image {
        config: line("ENV PGVALET_CONFIG=").to_owned(),
        binary: json_list(&line("ENTRYPOINT "))[0].clone(),
        health: json_list(line("HEALTHCHECK ").split_once("CMD ").unwrap().1),
        expose: line("EXPOSE ")
            .split_whitespace()
            .map(|p| p.parse().unwrap())
            .collect(),
        user: line("USER "),
    }
}

#[test]
fn dockerfile_runs_pgvalet_unprivileged_with_its_health_check() {
    let image = image();
    assert_eq!(image.health, [image.binary.as_str(), "health"]);
    assert_eq!(image.user, "nonroot");
    assert_eq!(image.config, "/etc/pgvalet/pgvalet.toml");
    let example = Config::parse(
        include_str!("../config/example.toml"),
        Path::new("config/example.toml"),
    )
    .unwrap();
    assert!(image.expose.contains(&example.listen_addr.port()));
    assert!(image.expose.contains(&example.metrics.unwrap().addr.port()));
}

#[test]
fn compose_matches_make_run_aws_and_the_config_keys() {
    let compose = compose();
    let services = compose["services"].as_object().unwrap();
    let pgvalet = &services["pgvalet"];
    let image = image();

    // The config file mounted where the image looks for it, with the service's overrides,
    // loads — so every PGVALET_ variable names a real key with a valid value.
    let mounts: BTreeMap<String, String> = pgvalet["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            let parts: Vec<&str> = v.as_str().unwrap().split(':').collect();
            (parts[1].to_owned(), parts[0].to_owned())
        })
        .collect();
    let config_source = &mounts[&image.config];
    let (config, overridden) =
        Config::load_with_env(&repo(config_source), &env_of(pgvalet)).unwrap();
    let run_aws = Config::load(&repo(config_source)).unwrap();
    assert_eq!(config_source, "./config/dev-aws.toml");
    assert!(overridden.len() >= 5, "{overridden:?}");

    // Host ports are make run-aws's; container ports are what the config listens on.
    let metrics = config.metrics.as_ref().unwrap().addr;
    let published = ports(pgvalet);
    assert!(published.contains(&(run_aws.listen_addr.port(), config.listen_addr.port())));
    assert!(published.contains(&(
        run_aws.metrics.as_ref().unwrap().addr.port(),
        metrics.port()
    )));
    assert!(config.listen_addr.ip().is_unspecified() && metrics.ip().is_unspecified());

    // The backend is the postgres service, on its container port; make run-aws's backend port
    // is the one published on the host.
    let backend = &config.backends["local"];
    assert!(services.contains_key(&backend.host), "{}", backend.host);
    assert_eq!(
        ports(&services[&backend.host]),
        [(run_aws.backends["local"].port, backend.port)]
    );

    // Secrets Manager is the moto service, the seed job stores into the same address, and the
    // host port is make run-aws's endpoint's.
    for (name, creds) in &config.credentials {
        let url = creds.endpoint_url.as_deref().unwrap();
        let (host, port) = url.trim_start_matches("http://").split_once(':').unwrap();
        assert!(services.contains_key(host), "credentials.{name}: {url}");
        let run_aws_port: u16 = run_aws.credentials[name]
            .endpoint_url
            .as_deref()
            .unwrap()
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(
            ports(&services[host]),
            [(run_aws_port, port.parse().unwrap())]
        );
        assert!(env_of(&services["seed"]).contains(&("PGVALET_DEV_SM".into(), url.into())));
    }

    // Certificate paths resolve inside the pki volume, which the setup job fills with
    // certs-dev/ (the layout of `make certs`).
    let workdir = pgvalet["working_dir"].as_str().unwrap();
    assert_eq!(mounts.get(workdir).map(String::as_str), Some("pki"));
    for path in [&config.tls.cert, &config.tls.key, &config.tls.client_ca] {
        assert!(path.starts_with("certs-dev"), "{}", path.display());
    }
    let setup = std::fs::read_to_string(repo("deploy/compose/setup.sh")).unwrap();
    assert!(setup.contains("devpki \"$D/certs-dev\""));
    assert_eq!(services["setup"]["volumes"][0], "pki:/pki");

    // Files the services mount from the repository exist.
    for service in services.values() {
        for volume in service["volumes"].as_array().into_iter().flatten() {
            let source = volume.as_str().unwrap().split(':').next().unwrap();
            if source.starts_with("./") {
                assert!(repo(source).exists(), "{source}");
            }
        }
    }
}

#[test]
fn ecs_task_definition_is_a_working_sidecar() {
    let text = std::fs::read_to_string(repo("deploy/ecs/task-definition.json")).unwrap();
    let task: Value = serde_json::from_str(&text).unwrap();
    assert!(
        task["taskRoleArn"]
            .as_str()
            .unwrap()
            .starts_with("arn:aws:iam::")
    );
    let containers = task["containerDefinitions"].as_array().unwrap();
    let pgvalet = containers.iter().find(|c| c["name"] == "pgvalet").unwrap();
    let app = containers.iter().find(|c| c["name"] != "pgvalet").unwrap();
    let pairs = |list: &Value| -> Vec<(String, String)> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let value = e.get("value").or(e.get("valueFrom")).unwrap();
                (
                    e["name"].as_str().unwrap().to_owned(),
                    value.as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let environment = pairs(&pgvalet["environment"]);
    let secrets = pairs(&pgvalet["secrets"]);

    // The configuration comes whole from the environment and loads with the overrides.
    assert!(
        environment
            .iter()
            .any(|(k, _)| k == pgvalet::config::env::WHOLE)
    );
    let (config, overridden) =
        Config::load_with_env(Path::new("/nonexistent/pgvalet.toml"), &environment).unwrap();
    assert_eq!(overridden, ["PGVALET_INSTANCE_ID"]);

    // Every env:NAME the configuration reads is injected, from Secrets Manager.
    let mut pem = vec![&config.tls.cert, &config.tls.key, &config.tls.client_ca];
    pem.extend(config.backends.values().filter_map(|b| b.ca.as_ref()));
    for path in pem {
        let name = path.to_str().unwrap().strip_prefix("env:").unwrap();
        let from = secrets.iter().find(|(k, _)| k == name);
        assert!(
            from.is_some_and(|(_, v)| v.starts_with("arn:aws:secretsmanager:")),
            "{name} is not injected"
        );
    }
    // Database credentials come from Secrets Manager with the task role, never the task.
    assert!(
        config
            .credentials
            .values()
            .all(|c| c.source == pgvalet::config::SourceKind::Aws)
    );
    assert!(!text.contains("password"));

    // Health check, user and ports match the image; metrics are published, clients are not.
    let image = image();
    let health: Vec<&str> = pgvalet["healthCheck"]["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(health[0], "CMD");
    assert_eq!(
        health[1..],
        image.health.iter().map(String::as_str).collect::<Vec<_>>()[..]
    );
    assert_eq!(pgvalet["user"], "65532");
    let mapped: Vec<u64> = pgvalet["portMappings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["containerPort"].as_u64().unwrap())
        .collect();
    assert_eq!(
        mapped,
        [u64::from(config.metrics.as_ref().unwrap().addr.port())]
    );
    assert!(
        config.listen_addr.ip().is_loopback(),
        "a sidecar listens on loopback"
    );
    assert!(pgvalet["stopTimeout"].as_u64().unwrap() > config.shutdown_timeout.as_secs());

    // The application reaches pgvalet on the task's loopback, verifies it, and waits for it.
    let app_env: BTreeMap<String, String> = pairs(&app["environment"]).into_iter().collect();
    assert_eq!(app_env["PGHOST"], config.listen_addr.ip().to_string());
    assert_eq!(app_env["PGPORT"], config.listen_addr.port().to_string());
    assert_eq!(app_env["PGSSLMODE"], "verify-full");
    let route = &config.routes[0];
    assert!(route.users().contains(&app_env["PGUSER"].as_str()));
    assert!(route.allows_database(&app_env["PGDATABASE"]));
    assert_eq!(app["dependsOn"][0]["containerName"], "pgvalet");
    assert_eq!(app["dependsOn"][0]["condition"], "HEALTHY");
}

/// The Dockerfile's `ARG NAME=default` lines before the first `FROM`: the base images.
fn base_image_args() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(repo("Dockerfile")).unwrap();
    text.lines()
        .take_while(|l| !l.starts_with("FROM "))
        .filter_map(|l| l.strip_prefix("ARG "))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap();
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

#[test]
fn base_images_are_public_by_default_and_replaceable_everywhere() {
    let args = base_image_args();
    assert_eq!(args["RUST_IMAGE"], "rust:1.95-slim-bookworm");
    assert_eq!(
        args["RUNTIME_IMAGE"],
        "gcr.io/distroless/cc-debian12:nonroot"
    );
    assert_eq!(args["DEVTOOLS_IMAGE"], "debian:bookworm-slim");
    let dockerfile = std::fs::read_to_string(repo("Dockerfile")).unwrap();
    for arg in args.keys() {
        assert!(
            dockerfile.contains(&format!("FROM ${{{arg}}}")),
            "{arg} is not a FROM"
        );
    }

    // The compose file passes the same defaults, each replaceable by the PGVALET_ variable that
    // scripts/local-base-images.sh --env sets; so are the images of Postgres and moto.
    let raw = std::fs::read_to_string(repo("docker-compose.yml")).unwrap();
    let local = std::fs::read_to_string(repo("scripts/local-base-images.sh")).unwrap();
    for (arg, default) in &args {
        let var = format!("PGVALET_{arg}");
        assert!(
            raw.contains(&format!("{arg}: ${{{var}:-{default}}}")),
            "compose build arg {arg}"
        );
        assert!(local.contains(&format!("export {var}=")), "{var}");
    }
    let compose = compose();
    let services = compose["services"].as_object().unwrap();
    assert_eq!(services["postgres"]["image"], "postgres:15");
    assert_eq!(services["moto"]["image"], services["seed"]["image"]);
    for var in ["PGVALET_POSTGRES_IMAGE", "PGVALET_MOTO_IMAGE"] {
        assert!(raw.contains(&format!("image: ${{{var}:-")), "{var}");
        assert!(local.contains(&format!("export {var}=")), "{var}");
    }
    for name in ["setup", "pgvalet"] {
        let build = &services[name]["build"];
        assert_eq!(build["context"], ".");
        for (arg, default) in &args {
            assert_eq!(build["args"][arg], default.as_str(), "{name}: {arg}");
        }
    }
    assert_eq!(services["setup"]["build"]["target"], "devtools");
}

#[test]
fn compose_stop_lets_pgvalet_drain() {
    let compose = compose();
    let pgvalet = &compose["services"]["pgvalet"];
    let grace: u64 = pgvalet["stop_grace_period"]
        .as_str()
        .unwrap()
        .trim_end_matches('s')
        .parse()
        .unwrap();
    let config = Config::load(&repo("config/dev-aws.toml")).unwrap();
    assert!(grace > config.shutdown_timeout.as_secs());
}
