//! Layers: "Layers are extracted to the /opt directory in the function
//! execution environment" (Lambda, "Managing Lambda dependencies with
//! layers"). A function here is a local process, and every process on this
//! machine shares one /opt, so each function gets a directory of its own
//! that stands for it, named in `HOOKCAST_OPT_DIR` (the one difference from
//! AWS: the bootstraps read /opt through it). Its layers' files are copied
//! into it in the order the function lists them, a later layer's file over an
//! earlier one's: "The order in which you add the layers is the order in
//! which Lambda merges the layer content into the execution environment"
//! ("Adding layers to functions").

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::place::Place;
use crate::template::str_of;

/// "You can add up to five layers to a Lambda function" ("Adding layers to
/// functions").
pub const MAX_LAYERS: usize = 5;

/// "The total unzipped size of the function and all layers cannot exceed
/// the unzipped deployment package size quota of 250 MB" (the same page).
pub const MAX_UNZIPPED_BYTES: u64 = 250 * 1024 * 1024;

/// The stack's stand-ins for /opt, one directory per function under it;
/// removed with the stack.
pub(super) struct OptDir(pub(super) PathBuf);

impl OptDir {
    pub(super) fn new() -> Self {
        let n = super::provision::suffix().to_lowercase();
        Self(std::env::temp_dir().join(format!("hookcast-emulate-opt-{}-{n}", std::process::id())))
    }
}

impl Drop for OptDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The file `--config` stands in for, in a layer that ships it.
pub const CONFIG_FILE: &str = "hookcast.toml";

/// The function's layers (its `Layers`, resolved to the template's own
/// `AWS::Serverless::LayerVersion`s) copied into `opt`, and `--config` over
/// the `hookcast.toml` one of them ships; `code_bytes` is the function's own
/// unzipped size. The function's /opt, or `None` when it has no layer.
pub(super) fn populate(
    place: &Place<'_>,
    id: &str,
    what: &str,
    props: &Map<String, Value>,
    runtime: &str,
    arch: &str,
    code_bytes: u64,
) -> Result<Option<PathBuf>, String> {
    let (args, t, attrs) = (place.args, place.t, place.attrs);
    let opt = &place.opt_dir.join(id);
    let arns: Vec<String> = props.get("Layers").and_then(Value::as_array).into_iter().flatten().map(str_of).collect();
    if arns.is_empty() {
        return Ok(None);
    }
    if arns.len() > MAX_LAYERS {
        return Err(format!("{what}: {} layers; a function may use at most {MAX_LAYERS}", arns.len()));
    }
    let project =
        args.template.parent().map(Path::to_path_buf).filter(|p| !p.as_os_str().is_empty()).unwrap_or_else(|| ".".into());
    std::fs::create_dir_all(opt).map_err(|e| format!("{what}: {}: {e}", opt.display()))?;
    let mut bytes = code_bytes;
    for arn in &arns {
        let (id, layer) = t
            .live()
            .filter(|(_, r)| r.kind == "AWS::Serverless::LayerVersion")
            .find(|(id, _)| attrs.reference(id).is_ok_and(|r| &r == arn))
            .ok_or_else(|| format!("{what}: layer {arn} is not one of this template's: only those are run here"))?;
        let lp = t.resolve(&Value::Object(layer.properties.clone()), attrs)?;
        let fits = |key: &str, want: &str| {
            lp.get(key).and_then(Value::as_array).is_none_or(|list| list.iter().any(|v| str_of(v) == want))
        };
        if !fits("CompatibleRuntimes", runtime) || !fits("CompatibleArchitectures", arch) {
            return Err(format!("{what}: layer {id} is not compatible with {runtime} on {arch}"));
        }
        let dir = project.join(str_of(&lp["ContentUri"]));
        if !dir.is_dir() {
            return Err(format!("{what}: layer {id}'s ContentUri {} is not a directory", dir.display()));
        }
        bytes += copy_tree(&dir, opt).map_err(|e| format!("{what}: layer {id}: {e}"))?;
    }
    if bytes > MAX_UNZIPPED_BYTES {
        return Err(format!("{what}: it and its layers hold {bytes} bytes unzipped; Lambda's limit is {MAX_UNZIPPED_BYTES}"));
    }
    if let Some(config) = &args.config {
        let target = opt.join(CONFIG_FILE);
        if !target.is_file() {
            return Err(format!("--config: no layer of {what} ships a {CONFIG_FILE} for it to stand in for"));
        }
        std::fs::copy(config, &target).map_err(|e| format!("--config {}: {e}", config.display()))?;
    }
    Ok(Some(opt.clone()))
}

/// Copies `from`'s files into `to` (over what is there); their bytes.
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<u64> {
    let mut bytes = 0;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target: PathBuf = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            std::fs::create_dir_all(&target)?;
            bytes += copy_tree(&entry.path(), &target)?;
        } else {
            bytes += std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(bytes)
}
