//! Reader for PyTorch checkpoints in the legacy (pre-1.6, non-zip) `torch.save` format, which
//! `candle_core::pickle` does not read. Old released weights (e.g. torchvision's VGG16 and the
//! pytorch-fid Inception) use it.
//!
//! Layout: a pickled magic number, a pickled protocol version, a pickled system-info dict,
//! the pickled object (here a `state_dict`) whose tensors refer to storages by persistent
//! ids `('storage', StorageType, key, location, numel, view)`, a pickled list of storage keys,
//! then for every key in that order an 8-byte little-endian element count followed by the raw
//! little-endian data. Storages are located once when the file is opened and read on demand.

use candle_core::pickle::{Object, Stack};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// The pickled magic number 0x1950a86a20f9469cfc6c as written by `torch.save` (protocol 2).
const MAGIC: [u8; 15] = [
    0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e,
];

#[derive(Debug, Clone)]
struct Info {
    storage: String,
    dtype: DType,
    /// Offset in elements from the start of the root storage.
    offset: usize,
    shape: Vec<usize>,
    stride: Vec<usize>,
}

/// An opened legacy checkpoint.
pub struct LegacyPth {
    path: PathBuf,
    tensors: HashMap<String, Info>,
    /// Byte offset of each storage's data in the file, and its element count.
    storages: HashMap<String, (u64, usize)>,
}

fn err(msg: impl Into<String>) -> String {
    msg.into()
}

fn as_usize(o: &Object) -> Option<usize> {
    match o {
        Object::Int(i) if *i >= 0 => Some(*i as usize),
        Object::Long(i) if *i >= 0 => Some(*i as usize),
        _ => None,
    }
}

fn as_usizes(o: &Object) -> Option<Vec<usize>> {
    match o {
        Object::Tuple(v) | Object::List(v) => v.iter().map(as_usize).collect(),
        // torch.Size pickles as a reduce of (torch.Size, (tuple,)).
        Object::Reduce { args, .. } => match args.as_ref() {
            Object::Tuple(a) if a.len() == 1 => as_usizes(&a[0]),
            _ => None,
        },
        _ => None,
    }
}

fn storage_dtype(class: &str) -> Option<DType> {
    Some(match class {
        "FloatStorage" => DType::F32,
        "DoubleStorage" => DType::F64,
        "HalfStorage" => DType::F16,
        "BFloat16Storage" => DType::BF16,
        "ByteStorage" => DType::U8,
        "LongStorage" => DType::I64,
        _ => return None,
    })
}

/// Parses one tensor object; `None` for anything that is not a supported tensor.
fn tensor_info(obj: &Object) -> Option<Info> {
    let Object::Reduce { callable, args } = obj else {
        return None;
    };
    let Object::Class {
        module_name,
        class_name,
    } = callable.as_ref()
    else {
        return None;
    };
    let Object::Tuple(args) = args.as_ref() else {
        return None;
    };
    match (module_name.as_str(), class_name.as_str()) {
        ("torch._utils", "_rebuild_parameter") => return tensor_info(args.first()?),
        ("torch._utils", "_rebuild_tensor_v2") | ("torch._utils", "_rebuild_tensor") => {}
        _ => return None,
    }
    if args.len() < 4 {
        return None;
    }
    let Object::PersistentLoad(pid) = &args[0] else {
        return None;
    };
    let Object::Tuple(pid) = pid.as_ref() else {
        return None;
    };
    if pid.len() < 5 {
        return None;
    }
    let Object::Class { class_name: st, .. } = &pid[1] else {
        return None;
    };
    let Object::Unicode(key) = &pid[2] else {
        return None;
    };
    let mut offset = as_usize(&args[1])?;
    // A view into a larger storage: (view_key, offset, size).
    if let Some(Object::Tuple(view)) = pid.get(5) {
        offset += view.get(1).and_then(as_usize)?;
    }
    Some(Info {
        storage: key.clone(),
        dtype: storage_dtype(st)?,
        offset,
        shape: as_usizes(&args[2])?,
        stride: as_usizes(&args[3])?,
    })
}

fn read_pickle<R: BufRead>(r: &mut R) -> Result<Object, String> {
    let mut stack = Stack::empty();
    stack
        .read_loop(r)
        .map_err(|e| err(format!("cannot parse pickle: {e}")))?;
    stack
        .finalize()
        .map_err(|e| err(format!("cannot parse pickle: {e}")))
}

impl LegacyPth {
    /// True if the file starts with the legacy `torch.save` magic number.
    pub fn is_legacy(path: &Path) -> bool {
        let mut head = [0u8; 15];
        std::fs::File::open(path)
            .and_then(|mut f| f.read_exact(&mut head))
            .map(|_| head == MAGIC)
            .unwrap_or(false)
    }

    /// Opens a legacy checkpoint holding a `state_dict` (or a dict of tensors).
    pub fn open(path: &Path) -> Result<Self, String> {
        let file = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
        let mut r = BufReader::new(file);
        let mut head = [0u8; 15];
        r.read_exact(&mut head).map_err(|e| err(e.to_string()))?;
        if head != MAGIC {
            return Err(err("not a legacy torch.save file (bad magic number)"));
        }
        let _protocol = read_pickle(&mut r)?;
        let _sys_info = read_pickle(&mut r)?;
        let main = read_pickle(&mut r)?;
        let entries = match main {
            Object::Dict(d) => d,
            Object::Build { callable, .. } => match *callable {
                Object::Dict(d) => d,
                _ => return Err(err("the checkpoint does not hold a state_dict")),
            },
            _ => return Err(err("the checkpoint does not hold a state_dict")),
        };
        let mut tensors = HashMap::new();
        for (k, v) in &entries {
            if let (Object::Unicode(name), Some(info)) = (k, tensor_info(v)) {
                tensors.insert(name.clone(), info);
            }
        }
        let keys = match read_pickle(&mut r)? {
            Object::List(v) => v,
            _ => return Err(err("missing storage key list")),
        };
        let mut dtypes: HashMap<&str, DType> = HashMap::new();
        for i in tensors.values() {
            dtypes.insert(i.storage.as_str(), i.dtype);
        }
        let mut storages = HashMap::new();
        let mut pos = r.stream_position().map_err(|e| err(e.to_string()))?;
        for k in keys {
            let Object::Unicode(k) = k else {
                return Err(err("bad storage key"));
            };
            let mut n = [0u8; 8];
            r.seek(SeekFrom::Start(pos))
                .map_err(|e| err(e.to_string()))?;
            r.read_exact(&mut n)
                .map_err(|e| err(format!("truncated storage {k}: {e}")))?;
            let numel = u64::from_le_bytes(n) as usize;
            let Some(dt) = dtypes.get(k.as_str()) else {
                // A storage of an unsupported type (e.g. IntStorage): element size unknown,
                // so the following storages cannot be located. Stop here.
                break;
            };
            storages.insert(k.clone(), (pos + 8, numel));
            pos += 8 + (numel * dt.size_in_bytes()) as u64;
        }
        let len = std::fs::metadata(path)
            .map_err(|e| err(e.to_string()))?
            .len();
        if pos > len {
            return Err(err(format!(
                "file is truncated: storages need {pos} bytes, the file has {len}"
            )));
        }
        Ok(Self {
            path: path.to_path_buf(),
            tensors,
            storages,
        })
    }

    /// Names of the tensors found.
    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.tensors.keys()
    }

    /// Reads tensor `name` (in its stored dtype), if present.
    pub fn get(&self, name: &str) -> Result<Option<Tensor>, String> {
        let Some(info) = self.tensors.get(name) else {
            return Ok(None);
        };
        let Some(&(start, numel)) = self.storages.get(&info.storage) else {
            return Err(err(format!("storage of {name} not found in the file")));
        };
        let count: usize = info.shape.iter().product();
        // Only row-major contiguous tensors (what state_dicts hold).
        let mut expect = 1;
        for (d, s) in info.shape.iter().zip(&info.stride).rev() {
            if *d > 1 && *s != expect {
                return Err(err(format!("{name} is not stored contiguously")));
            }
            expect *= d;
        }
        if info.offset + count > numel {
            return Err(err(format!("{name} lies outside its storage")));
        }
        let es = info.dtype.size_in_bytes();
        let mut f = std::fs::File::open(&self.path).map_err(|e| err(e.to_string()))?;
        f.seek(SeekFrom::Start(start + (info.offset * es) as u64))
            .map_err(|e| err(e.to_string()))?;
        let mut buf = vec![0u8; count * es];
        f.read_exact(&mut buf)
            .map_err(|e| err(format!("reading {name}: {e}")))?;
        let t = Tensor::from_raw_buffer(&buf, info.dtype, &info.shape, &Device::Cpu)
            .map_err(|e| err(e.to_string()))?;
        Ok(Some(t))
    }
}
