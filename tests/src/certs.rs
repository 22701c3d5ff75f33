//! Test certificates made by the `openssl` command: a CA and leaves signed
//! by it with a chosen DNS or IP SAN and validity (an expired one included),
//! for the TLS and identity tests against a real aggregator.

use std::path::Path;
use std::process::Command;

/// Runs `openssl` in `dir`; panics with its stderr when it fails.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect(
            "the openssl command is needed to make test certificates (apt-get install openssl)",
        );
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA named `name` (`name.pem`, `name.key`).
pub fn ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
}

/// A leaf `name` signed by `ca` with `san`, valid from `start` to `end`
/// (`YYYYMMDDHHMMSSZ`, `openssl ca` dates) or for a day.
pub fn leaf(dir: &Path, ca: &str, name: &str, san: &str, dates: Option<(&str, &str)>) {
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={name}"),
        ],
    );
    std::fs::write(
        dir.join(format!("{name}.ext")),
        format!("subjectAltName={san}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth,clientAuth\n"),
    )
    .expect("ext");
    let db = dir.join(format!("{ca}.db"));
    if !db.exists() {
        std::fs::write(&db, "").expect("index");
        std::fs::write(dir.join(format!("{ca}.srl")), "1000\n").expect("serial");
    }
    std::fs::write(
        dir.join(format!("{ca}.cnf")),
        format!(
            "[ca]\ndefault_ca = d\n[d]\ndatabase = {ca}.db\nnew_certs_dir = .\nserial = {ca}.srl\ndefault_md = sha256\npolicy = p\nunique_subject = no\n[p]\ncommonName = supplied\n"
        ),
    )
    .expect("ca config");
    let (start, end) = dates.unwrap_or(("", ""));
    let mut args = vec![
        "ca",
        "-batch",
        "-notext",
        "-config",
        &format!("{ca}.cnf"),
        "-cert",
        &format!("{ca}.pem"),
        "-keyfile",
        &format!("{ca}.key"),
        "-in",
        &format!("{name}.csr"),
        "-out",
        &format!("{name}.pem"),
        "-extfile",
        &format!("{name}.ext"),
    ]
    .into_iter()
    .map(str::to_owned)
    .collect::<Vec<_>>();
    if dates.is_some() {
        args.extend([
            "-startdate".into(),
            start.into(),
            "-enddate".into(),
            end.into(),
        ]);
    } else {
        args.extend(["-days".into(), "1".into()]);
    }
    openssl(dir, &args.iter().map(String::as_str).collect::<Vec<_>>());
}
