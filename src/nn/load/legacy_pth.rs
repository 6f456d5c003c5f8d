//! Reader for PyTorch checkpoints in the legacy (pre-1.6, non-zip) `torch.save` format, which
//! `candle_core::pickle` does not read. Old released weights (e.g. torchvision's VGG16 and the
//! pytorch-fid Inception) use it.
//!
//! Layout: a pickled magic number, a pickled protocol version, a pickled system-info dict,
//! the pickled object (here a `state_dict`) whose tensors refer to storages by persistent
//! ids `('storage', StorageType, key, location, numel, view)`, a pickled list of storage keys,
//! then for every key in that order an 8-byte little-endian element count followed by the raw
//! little-endian data. Storages are located once when the file is opened and read on demand.

use candle_core::pickle::Object;
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// The pickled magic number 0x1950a86a20f9469cfc6c as written by `torch.save` (protocol 2).
const MAGIC: [u8; 15] = [0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e];

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
    let Object::Class { module_name, class_name } = callable.as_ref() else {
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

/// A small pickle interpreter for the opcodes `torch.save` emits with protocol 2, from
/// Python 3 and Python 2 (byte strings) alike. It produces candle's pickle [`Object`]s.
/// `collections.OrderedDict()` becomes an empty dict; other classes are kept symbolic.
fn read_pickle<R: BufRead>(r: &mut R) -> Result<Object, String> {
    fn rd<R: Read>(r: &mut R, n: usize) -> Result<Vec<u8>, String> {
        let mut b = vec![0u8; n];
        r.read_exact(&mut b).map_err(|e| err(format!("truncated pickle: {e}")))?;
        Ok(b)
    }
    fn u32le<R: Read>(r: &mut R) -> Result<u32, String> {
        let b = rd(r, 4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn line<R: BufRead>(r: &mut R) -> Result<String, String> {
        let mut v = Vec::new();
        r.read_until(b'\n', &mut v).map_err(|e| err(format!("truncated pickle: {e}")))?;
        if v.pop() != Some(b'\n') {
            return Err(err("truncated pickle"));
        }
        Ok(String::from_utf8_lossy(&v).into_owned())
    }
    let mut stack: Vec<Object> = Vec::new();
    let mut marks: Vec<usize> = Vec::new();
    let mut memo: HashMap<u32, Object> = HashMap::new();
    let pop = |stack: &mut Vec<Object>| stack.pop().ok_or_else(|| err("pickle stack underflow"));
    let pop_mark = |stack: &mut Vec<Object>, marks: &mut Vec<usize>| -> Result<Vec<Object>, String> {
        let m = marks.pop().ok_or_else(|| err("pickle mark missing"))?;
        if m > stack.len() {
            return Err(err("pickle mark beyond stack"));
        }
        Ok(stack.split_off(m))
    };
    loop {
        let op = rd(r, 1)?[0];
        match op {
            0x80 => {
                rd(r, 1)?; // PROTO
            }
            b'.' => return pop(&mut stack), // STOP
            b'c' => {
                let module_name = line(r)?;
                let class_name = line(r)?;
                stack.push(Object::Class { module_name, class_name });
            }
            b'q' => {
                let i = rd(r, 1)?[0] as u32;
                memo.insert(i, stack.last().cloned().ok_or_else(|| err("empty stack"))?);
            }
            b'r' => {
                let i = u32le(r)?;
                memo.insert(i, stack.last().cloned().ok_or_else(|| err("empty stack"))?);
            }
            b'h' | b'j' => {
                let i = if op == b'h' { rd(r, 1)?[0] as u32 } else { u32le(r)? };
                stack.push(memo.get(&i).cloned().ok_or_else(|| err("pickle memo miss"))?);
            }
            b'(' => marks.push(stack.len()),
            b't' => {
                let v = pop_mark(&mut stack, &mut marks)?;
                stack.push(Object::Tuple(v));
            }
            b')' => stack.push(Object::Tuple(vec![])),
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                if stack.len() < n {
                    return Err(err("pickle stack underflow"));
                }
                let v = stack.split_off(stack.len() - n);
                stack.push(Object::Tuple(v));
            }
            b']' => stack.push(Object::List(vec![])),
            b'l' => {
                let v = pop_mark(&mut stack, &mut marks)?;
                stack.push(Object::List(v));
            }
            b'}' => stack.push(Object::Dict(vec![])),
            b'd' => {
                let v = pop_mark(&mut stack, &mut marks)?;
                let mut it = v.into_iter();
                let mut d = Vec::new();
                while let (Some(k), Some(val)) = (it.next(), it.next()) {
                    d.push((k, val));
                }
                stack.push(Object::Dict(d));
            }
            b'a' => {
                let v = pop(&mut stack)?;
                match stack.last_mut() {
                    Some(Object::List(l)) => l.push(v),
                    _ => return Err(err("APPEND to a non-list")),
                }
            }
            b'e' => {
                let v = pop_mark(&mut stack, &mut marks)?;
                match stack.last_mut() {
                    Some(Object::List(l)) => l.extend(v),
                    _ => return Err(err("APPENDS to a non-list")),
                }
            }
            b's' => {
                let v = pop(&mut stack)?;
                let k = pop(&mut stack)?;
                match stack.last_mut() {
                    Some(Object::Dict(d)) => d.push((k, v)),
                    _ => return Err(err("SETITEM on a non-dict")),
                }
            }
            b'u' => {
                let v = pop_mark(&mut stack, &mut marks)?;
                let mut it = v.into_iter();
                let mut pairs = Vec::new();
                while let (Some(k), Some(val)) = (it.next(), it.next()) {
                    pairs.push((k, val));
                }
                match stack.last_mut() {
                    Some(Object::Dict(d)) => d.extend(pairs),
                    _ => return Err(err("SETITEMS on a non-dict")),
                }
            }
            b'R' | 0x81 => {
                // REDUCE / NEWOBJ
                let args = pop(&mut stack)?;
                let callable = pop(&mut stack)?;
                let obj = match &callable {
                    Object::Class { module_name, class_name }
                        if module_name == "collections"
                            && (class_name == "OrderedDict" || class_name == "defaultdict") =>
                    {
                        Object::Dict(vec![])
                    }
                    _ => Object::Reduce { callable: Box::new(callable), args: Box::new(args) },
                };
                stack.push(obj);
            }
            b'b' => {
                // BUILD: an object's state. Dict state set on a dict (OrderedDict._metadata)
                // is dropped; other objects keep it symbolically.
                let state = pop(&mut stack)?;
                let obj = pop(&mut stack)?;
                stack.push(match obj {
                    Object::Dict(d) => Object::Dict(d),
                    o => Object::Build { callable: Box::new(o), args: Box::new(state) },
                });
            }
            b'Q' => {
                let pid = pop(&mut stack)?;
                stack.push(Object::PersistentLoad(Box::new(pid)));
            }
            b'N' => stack.push(Object::None),
            0x88 => stack.push(Object::Bool(true)),
            0x89 => stack.push(Object::Bool(false)),
            b'K' => stack.push(Object::Int(rd(r, 1)?[0] as i32)),
            b'M' => {
                let b = rd(r, 2)?;
                stack.push(Object::Int(u16::from_le_bytes([b[0], b[1]]) as i32));
            }
            b'J' => stack.push(Object::Int(u32le(r)? as i32)),
            0x8a => {
                let n = rd(r, 1)?[0] as usize;
                let b = rd(r, n)?;
                if n > 8 {
                    return Err(err("integer too large in pickle"));
                }
                let mut v: i64 = 0;
                for (i, byte) in b.iter().enumerate() {
                    v |= (*byte as i64) << (8 * i);
                }
                if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                    v -= 1i64 << (8 * n); // negative
                }
                stack.push(Object::Long(v));
            }
            b'G' => {
                let b = rd(r, 8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(&b);
                stack.push(Object::Float(f64::from_be_bytes(a)));
            }
            b'X' | b'T' | b'U' => {
                // BINUNICODE (py3 str), BINSTRING / SHORT_BINSTRING (py2 str).
                let n = if op == b'U' { rd(r, 1)?[0] as usize } else { u32le(r)? as usize };
                let b = rd(r, n)?;
                stack.push(Object::Unicode(String::from_utf8_lossy(&b).into_owned()));
            }
            other => {
                return Err(err(format!(
                    "unsupported pickle opcode 0x{other:02x} (only protocol-2 torch.save files \
                     are read)"
                )))
            }
        }
    }
}

impl LegacyPth {
    /// True if the file starts with the legacy `torch.save` magic number.
    pub fn is_legacy(path: &Path) -> bool {
        let mut head = [0u8; 15];
        std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut head)).map(|_| head == MAGIC).unwrap_or(false)
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
            r.seek(SeekFrom::Start(pos)).map_err(|e| err(e.to_string()))?;
            r.read_exact(&mut n).map_err(|e| err(format!("truncated storage {k}: {e}")))?;
            let numel = u64::from_le_bytes(n) as usize;
            let Some(dt) = dtypes.get(k.as_str()) else {
                // A storage of an unsupported type (e.g. IntStorage): element size unknown,
                // so the following storages cannot be located. Stop here.
                break;
            };
            storages.insert(k.clone(), (pos + 8, numel));
            pos += 8 + (numel * dt.size_in_bytes()) as u64;
        }
        let len = std::fs::metadata(path).map_err(|e| err(e.to_string()))?.len();
        if pos > len {
            return Err(err(format!("file is truncated: storages need {pos} bytes, the file has {len}")));
        }
        Ok(Self { path: path.to_path_buf(), tensors, storages })
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
        f.seek(SeekFrom::Start(start + (info.offset * es) as u64)).map_err(|e| err(e.to_string()))?;
        let mut buf = vec![0u8; count * es];
        f.read_exact(&mut buf).map_err(|e| err(format!("reading {name}: {e}")))?;
        let t = Tensor::from_raw_buffer(&buf, info.dtype, &info.shape, &Device::Cpu).map_err(|e| err(e.to_string()))?;
        Ok(Some(t))
    }
}
