//! Readers for the released checkpoint containers that are not plain state dicts:
//!
//! - RectifiedFlow `checkpoint_*.pth`: `ckpt['ema']['shadow_params']`, a list of tensors in
//!   `model.parameters()` order (NETWORKS.md §3 "Checkpoint"), read with candle's pickle parser.
//! - openai/consistency_models_cifar10 flax checkpoints: `flax.serialization.to_bytes(State)`,
//!   a msgpack map whose `params_ema` (also accepted under `state`) holds the parameter tree
//!   (NETWORKS.md §4). numpy arrays are msgpack ext type 1 (ext 3 for numpy scalars), whose
//!   payload is itself msgpack `(shape, dtype name, C-order bytes)`; flax's chunked large
//!   arrays (`__msgpack_chunked_array__`, only used above 2³⁰ bytes per array) are joined too.
//!   Supported dtypes: float16, bfloat16, float32, float64 (converted to f32); anything else
//!   is an error naming the key.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use candle_core::pickle::{Object, Stack};
use candle_core::{DType, Device, Tensor};

use super::weights::{LoadError, LoadResult, TensorStore, WithFile};

fn fmt_err(file: &str, msg: impl Into<String>) -> LoadError {
    LoadError::Format { file: file.to_string(), msg: msg.into() }
}

/// Reads the pickled object tree (`data.pkl`) of a PyTorch zip checkpoint, with the zip
/// directory its tensor records refer to.
fn read_pickle_tree(path: &Path) -> LoadResult<(Object, String)> {
    let f = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|source| LoadError::Io { file: f.clone(), source })?;
    let mut zip = zip::ZipArchive::new(BufReader::new(file))
        .map_err(|e| fmt_err(&f, format!("not a PyTorch zip checkpoint: {e}")))?;
    let name = zip
        .file_names()
        .find(|n| n.ends_with("data.pkl"))
        .map(|s| s.to_string())
        .ok_or_else(|| fmt_err(&f, "no data.pkl in the archive"))?;
    let dir = name.strip_suffix(".pkl").unwrap_or(&name).to_string();
    let entry = zip.by_name(&name).map_err(|e| fmt_err(&f, e.to_string()))?;
    let mut r = BufReader::new(entry);
    let mut stack = Stack::empty();
    stack.read_loop(&mut r).with_file(&f)?;
    let obj = stack.finalize().with_file(&f)?;
    Ok((obj, dir))
}

fn dict_get(obj: Object, key: &str, file: &str) -> LoadResult<Object> {
    match obj {
        Object::Dict(kv) => kv
            .into_iter()
            .find(|(k, _)| *k == Object::Unicode(key.to_string()))
            .map(|(_, v)| v)
            .ok_or_else(|| fmt_err(file, format!("no entry `{key}`"))),
        _ => Err(fmt_err(file, format!("expected a dict holding `{key}`"))),
    }
}

/// Reads one tensor record of a PyTorch zip checkpoint (contiguous storage only).
fn read_tensor(
    zip: &mut zip::ZipArchive<BufReader<std::fs::File>>,
    info: &candle_core::pickle::TensorInfo,
    file: &str,
) -> LoadResult<Tensor> {
    if !info.layout.is_contiguous() {
        return Err(fmt_err(file, format!("tensor `{}` is not contiguous", info.name)));
    }
    let entry = zip.by_name(&info.path).map_err(|e| fmt_err(file, format!("{}: {e}", info.path)))?;
    let mut r = BufReader::new(entry);
    let skip = info.layout.start_offset() as u64;
    std::io::copy(&mut r.by_ref().take(skip), &mut std::io::sink())
        .map_err(|source| LoadError::Io { file: file.to_string(), source })?;
    let shape = info.layout.shape().clone();
    let mut bytes = vec![0u8; shape.elem_count() * info.dtype.size_in_bytes()];
    r.read_exact(&mut bytes).map_err(|source| LoadError::Io { file: file.to_string(), source })?;
    Tensor::from_raw_buffer(&bytes, info.dtype, shape.dims(), &Device::Cpu).with_file(file)
}

/// The tensors of a list nested in a PyTorch zip checkpoint, e.g. `["ema", "shadow_params"]`.
pub fn read_pth_tensor_list(path: impl AsRef<Path>, at: &[&str]) -> LoadResult<Vec<Tensor>> {
    let path = path.as_ref();
    let f = path.display().to_string();
    let (mut obj, dir) = read_pickle_tree(path)?;
    for k in at {
        obj = dict_get(obj, k, &f)?;
    }
    let items = match obj {
        Object::List(v) => v,
        Object::Tuple(v) => v,
        _ => return Err(fmt_err(&f, format!("{} is not a list", at.join(".")))),
    };
    let file = std::fs::File::open(path).map_err(|source| LoadError::Io { file: f.clone(), source })?;
    let mut zip = zip::ZipArchive::new(BufReader::new(file)).map_err(|e| fmt_err(&f, e.to_string()))?;
    let dir = Path::new(&dir);
    let mut out = Vec::with_capacity(items.len());
    for (i, it) in items.into_iter().enumerate() {
        let info = it
            .into_tensor_info(Object::Unicode(format!("{}[{i}]", at.join("."))), dir)
            .with_file(&f)?
            .ok_or_else(|| fmt_err(&f, format!("{}[{i}] is not a tensor", at.join("."))))?;
        out.push(read_tensor(&mut zip, &info, &f)?);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// msgpack (flax)

fn rd_n<R: Read>(r: &mut R, n: usize) -> std::io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b[..n])?;
    let mut v = 0u64;
    for x in &b[..n] {
        v = (v << 8) | *x as u64;
    }
    Ok(v)
}

fn skip_n<R: Read>(r: &mut R, n: u64) -> std::io::Result<()> {
    let got = std::io::copy(&mut r.take(n), &mut std::io::sink())?;
    if got != n {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

/// Length headers of a msgpack value: `Map(n)`, `Array(n)`, or the bytes to skip.
enum Head {
    Map(u64),
    Array(u64),
    Str(u64),
    Skip(u64),
}

fn read_head<R: Read>(r: &mut R) -> std::io::Result<Head> {
    let mut m = [0u8; 1];
    r.read_exact(&mut m)?;
    let m = m[0];
    Ok(match m {
        0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => Head::Skip(0),
        0x80..=0x8f => Head::Map((m & 0x0f) as u64),
        0x90..=0x9f => Head::Array((m & 0x0f) as u64),
        0xa0..=0xbf => Head::Str((m & 0x1f) as u64),
        0xc4 => Head::Skip(rd_n(r, 1)?),
        0xc5 => Head::Skip(rd_n(r, 2)?),
        0xc6 => Head::Skip(rd_n(r, 4)?),
        0xc7 => Head::Skip(rd_n(r, 1)? + 1),
        0xc8 => Head::Skip(rd_n(r, 2)? + 1),
        0xc9 => Head::Skip(rd_n(r, 4)? + 1),
        0xca => Head::Skip(4),
        0xcb => Head::Skip(8),
        0xcc | 0xd0 => Head::Skip(1),
        0xcd | 0xd1 => Head::Skip(2),
        0xce | 0xd2 => Head::Skip(4),
        0xcf | 0xd3 => Head::Skip(8),
        0xd4 => Head::Skip(2),
        0xd5 => Head::Skip(3),
        0xd6 => Head::Skip(5),
        0xd7 => Head::Skip(9),
        0xd8 => Head::Skip(17),
        0xd9 => Head::Str(rd_n(r, 1)?),
        0xda => Head::Str(rd_n(r, 2)?),
        0xdb => Head::Str(rd_n(r, 4)?),
        0xdc => Head::Array(rd_n(r, 2)?),
        0xdd => Head::Array(rd_n(r, 4)?),
        0xde => Head::Map(rd_n(r, 2)?),
        0xdf => Head::Map(rd_n(r, 4)?),
        0xc1 => return Err(std::io::Error::other("reserved msgpack marker 0xc1")),
    })
}

/// Skips one msgpack value without keeping it (a flax `State` also holds `params` and the
/// optimiser state, which can be several times larger than `params_ema`).
fn skip_value<R: Read>(r: &mut R) -> std::io::Result<()> {
    let mut pending: u64 = 1;
    while pending > 0 {
        pending -= 1;
        match read_head(r)? {
            Head::Map(n) => pending += 2 * n,
            Head::Array(n) => pending += n,
            Head::Str(n) | Head::Skip(n) => skip_n(r, n)?,
        }
    }
    Ok(())
}

/// Finds `params_ema` in the top-level map (or in its `state` entry) and decodes only it.
fn find_params_ema<R: BufRead>(r: &mut R, depth: usize) -> std::io::Result<Option<rmpv::Value>> {
    let n = match read_head(r)? {
        Head::Map(n) => n,
        Head::Array(n) => {
            for _ in 0..n {
                skip_value(r)?;
            }
            return Ok(None);
        }
        Head::Str(n) | Head::Skip(n) => {
            skip_n(r, n)?;
            return Ok(None);
        }
    };
    for _ in 0..n {
        let key = match read_head(r)? {
            Head::Str(len) => {
                if len > 1 << 20 {
                    return Err(std::io::Error::other("map key longer than 1 MiB"));
                }
                let mut b = vec![0u8; len as usize];
                r.read_exact(&mut b)?;
                String::from_utf8_lossy(&b).into_owned()
            }
            Head::Skip(len) => {
                skip_n(r, len)?;
                String::new()
            }
            _ => return Err(std::io::Error::other("unexpected non-scalar map key")),
        };
        if key == "params_ema" {
            return rmpv::decode::read_value(r).map(Some).map_err(std::io::Error::other);
        } else if key == "state" && depth == 0 {
            if let Some(v) = find_params_ema(r, depth + 1)? {
                return Ok(Some(v));
            }
            // `state` was read through without a match; keep scanning the rest of the root.
        } else {
            skip_value(r)?;
        }
    }
    Ok(None)
}

fn decode_ndarray(payload: &[u8], key: &str, file: &str) -> LoadResult<Tensor> {
    let err = |m: String| fmt_err(file, format!("`{key}`: {m}"));
    let v = rmpv::decode::read_value(&mut &payload[..]).map_err(|e| err(e.to_string()))?;
    let parts = v
        .as_array()
        .filter(|a| a.len() == 3)
        .ok_or_else(|| err("ndarray payload is not (shape, dtype, bytes)".into()))?;
    let shape: Vec<usize> = parts[0]
        .as_array()
        .and_then(|a| a.iter().map(|x| x.as_u64().map(|u| u as usize)).collect::<Option<Vec<_>>>())
        .ok_or_else(|| err("bad shape".into()))?;
    let dtype = parts[1].as_str().ok_or_else(|| err("bad dtype".into()))?;
    let bytes = parts[2].as_slice().ok_or_else(|| err("bad data".into()))?;
    let dt = match dtype {
        "float32" => DType::F32,
        "float16" => DType::F16,
        "bfloat16" => DType::BF16,
        "float64" => DType::F64,
        o => return Err(err(format!("unsupported dtype `{o}`"))),
    };
    let n: usize = shape.iter().product();
    if bytes.len() != n * dt.size_in_bytes() {
        return Err(err(format!("{} bytes for shape {shape:?} of {dtype}", bytes.len())));
    }
    Tensor::from_raw_buffer(bytes, dt, &shape, &Device::Cpu).and_then(|t| t.to_dtype(DType::F32)).with_file(file)
}

fn flatten_tree(v: &rmpv::Value, prefix: &str, out: &mut Vec<(String, Tensor)>, file: &str) -> LoadResult<()> {
    match v {
        rmpv::Value::Ext(code, payload) if *code == 1 || *code == 3 => {
            out.push((prefix.to_string(), decode_ndarray(payload, prefix, file)?));
        }
        rmpv::Value::Map(kv) => {
            let get = |name: &str| kv.iter().find(|(k, _)| k.as_str() == Some(name)).map(|(_, v)| v);
            if get("__msgpack_chunked_array__").and_then(|b| b.as_bool()) == Some(true) {
                let shape: Vec<usize> = get("shape")
                    .and_then(|s| s.as_array())
                    .and_then(|a| a.iter().map(|x| x.as_u64().map(|u| u as usize)).collect::<Option<Vec<_>>>())
                    .ok_or_else(|| fmt_err(file, format!("`{prefix}`: bad chunked array")))?;
                let chunks = get("chunks")
                    .and_then(|c| c.as_map())
                    .ok_or_else(|| fmt_err(file, format!("`{prefix}`: no chunks")))?;
                let mut parts: Vec<(usize, Tensor)> = Vec::new();
                for (k, c) in chunks {
                    let i = k
                        .as_str()
                        .and_then(|s| s.parse::<usize>().ok())
                        .or_else(|| k.as_u64().map(|u| u as usize))
                        .ok_or_else(|| fmt_err(file, format!("`{prefix}`: bad chunk key")))?;
                    let mut sub = Vec::new();
                    flatten_tree(c, prefix, &mut sub, file)?;
                    for (_, t) in sub {
                        parts.push((i, t.flatten_all().with_file(file)?));
                    }
                }
                parts.sort_by_key(|p| p.0);
                let ts: Vec<Tensor> = parts.into_iter().map(|p| p.1).collect();
                let t = Tensor::cat(&ts, 0).and_then(|t| t.reshape(shape.as_slice())).with_file(file)?;
                out.push((prefix.to_string(), t));
                return Ok(());
            }
            for (k, sub) in kv {
                let name = match k {
                    rmpv::Value::String(s) => s.as_str().unwrap_or("").to_string(),
                    other => other.to_string(),
                };
                let p = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
                flatten_tree(sub, &p, out, file)?;
            }
        }
        rmpv::Value::Nil => {}
        other => return Err(fmt_err(file, format!("`{prefix}`: unexpected value {}", short(other)))),
    }
    Ok(())
}

fn short(v: &rmpv::Value) -> String {
    let s = v.to_string();
    s.chars().take(60).collect()
}

/// Reads the `params_ema` tree of a flax msgpack checkpoint (consistency_models_cifar10) into
/// a store keyed by `/`-joined paths with the root `params` collection removed — the keys of
/// `fixtures/cm_ncsnpp.full.keys.json`.
pub fn read_flax_params_ema(path: impl AsRef<Path>) -> LoadResult<TensorStore> {
    let path = path.as_ref();
    let f = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|source| LoadError::Io { file: f.clone(), source })?;
    let mut r = BufReader::with_capacity(1 << 20, file);
    let tree = find_params_ema(&mut r, 0)
        .map_err(|e| fmt_err(&f, format!("msgpack: {e}")))?
        .ok_or_else(|| fmt_err(&f, "no `params_ema` (nor `state.params_ema`) entry"))?;
    flax_tree_to_store(&tree, &f)
}

/// Turns a decoded flax parameter tree into a store (see [`read_flax_params_ema`]).
pub fn flax_tree_to_store(tree: &rmpv::Value, origin: &str) -> LoadResult<TensorStore> {
    // `params_ema` may be `{"params": {...}}` (a variables dict) or the params tree itself.
    let tree = match tree.as_map() {
        Some(kv) if kv.len() == 1 && kv[0].0.as_str() == Some("params") => &kv[0].1,
        _ => tree,
    };
    let mut out = Vec::new();
    flatten_tree(tree, "", &mut out, origin)?;
    TensorStore::new(origin, out)
}
