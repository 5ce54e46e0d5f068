//! Reader for CTranslate2's `model.bin`: an index of variables with their
//! offsets, so that the converter can read any slice of any tensor later
//! without holding the file in memory.

use std::collections::HashMap;
use std::io::{self, BufReader, Read, Seek};

use super::ConvertError;

/// Newest layout this reader knows (CTranslate2 4.x writes 6).
const MAX_BINARY_VERSION: u32 = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dtype {
    F32,
    I8,
    I16,
    I32,
    F16,
    Bf16,
}

impl Dtype {
    fn from_id(id: u8) -> Option<Dtype> {
        // The order of CTranslate2's DataType enum (include/ctranslate2/types.h).
        Some(match id {
            0 => Dtype::F32,
            1 => Dtype::I8,
            2 => Dtype::I16,
            3 => Dtype::I32,
            4 => Dtype::F16,
            5 => Dtype::Bf16,
            _ => return None,
        })
    }

    /// Before binary version 4 only the item size was stored; CTranslate2
    /// itself reads it back this way.
    fn from_item_size(size: u8) -> Option<Dtype> {
        Some(match size {
            1 => Dtype::I8,
            2 => Dtype::I16,
            4 => Dtype::F32,
            _ => return None,
        })
    }

    pub(crate) fn size(self) -> u64 {
        match self {
            Dtype::I8 => 1,
            Dtype::I16 | Dtype::F16 | Dtype::Bf16 => 2,
            Dtype::F32 | Dtype::I32 => 4,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Variable {
    pub shape: Vec<usize>,
    pub dtype: Dtype,
    /// Where the raw data starts in the file.
    pub offset: u64,
    /// Small scalars are kept: they carry flags such as `num_heads`.
    pub scalar: Option<Vec<u8>>,
}

impl Variable {
    pub(crate) fn elements(&self) -> usize {
        self.shape.iter().product()
    }

    pub(crate) fn scalar_int(&self) -> Option<i64> {
        let bytes = self.scalar.as_deref()?;
        Some(match self.dtype {
            Dtype::I8 => i8::from_le_bytes([bytes[0]]).into(),
            Dtype::I16 => i16::from_le_bytes([bytes[0], bytes[1]]).into(),
            Dtype::I32 => i32::from_le_bytes(bytes[..4].try_into().ok()?).into(),
            _ => return None,
        })
    }
}

#[derive(Debug)]
pub(crate) struct Ct2Model {
    pub spec: String,
    pub variables: HashMap<String, Variable>,
}

impl Ct2Model {
    pub(crate) fn get(&self, name: &str) -> Result<&Variable, ConvertError> {
        self.variables
            .get(name)
            .ok_or_else(|| ConvertError::Model(format!("нет переменной {name}")))
    }
}

fn bad(message: impl Into<String>) -> ConvertError {
    ConvertError::Model(message.into())
}

fn truncated() -> ConvertError {
    bad("файл обрывается: модель скачана не полностью или повреждена")
}

fn read_u8(r: &mut impl Read) -> io::Result<u8> {
    let mut b = [0u8; 1];
    r.read_exact(&mut b)?;
    Ok(b[0])
}

fn read_u16(r: &mut impl Read) -> io::Result<u16> {
    let mut b = [0u8; 2];
    r.read_exact(&mut b)?;
    Ok(u16::from_le_bytes(b))
}

fn read_u32(r: &mut impl Read) -> io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

fn read_string(r: &mut impl Read) -> Result<String, ConvertError> {
    let len = usize::from(read_u16(r)?);
    let mut bytes = vec![0u8; len];
    r.read_exact(&mut bytes)?;
    // The stored length includes the C string's NUL.
    if bytes.pop() != Some(0) {
        return Err(bad("строка без завершающего нуля"));
    }
    String::from_utf8(bytes).map_err(|_| bad("имя не в UTF-8"))
}

/// Reads the header and the variable index; data is skipped, not loaded.
pub(crate) fn read_index<R: Read + Seek>(reader: R) -> Result<Ct2Model, ConvertError> {
    read_index_inner(reader).map_err(|error| match error {
        ConvertError::Io(io) if io.kind() == io::ErrorKind::UnexpectedEof => truncated(),
        other => other,
    })
}

fn read_index_inner<R: Read + Seek>(reader: R) -> Result<Ct2Model, ConvertError> {
    let mut r = BufReader::with_capacity(1 << 16, reader);
    let version = read_u32(&mut r)?;
    if version == 0 || version > MAX_BINARY_VERSION {
        return Err(bad(format!(
            "неподдерживаемая версия формата {version} (поддерживаются 1–{MAX_BINARY_VERSION})"
        )));
    }
    let spec = if version >= 2 {
        let spec = read_string(&mut r)?;
        let _revision = read_u32(&mut r)?;
        spec
    } else {
        String::new()
    };
    let count = read_u32(&mut r)?;
    let mut variables = HashMap::with_capacity(count as usize);
    for _ in 0..count {
        let name = read_string(&mut r)?;
        let rank = read_u8(&mut r)?;
        let mut shape = Vec::with_capacity(rank.into());
        for _ in 0..rank {
            shape.push(read_u32(&mut r)? as usize);
        }
        let (dtype, bytes) = if version >= 4 {
            let id = read_u8(&mut r)?;
            let dtype =
                Dtype::from_id(id).ok_or_else(|| bad(format!("{name}: неизвестный тип {id}")))?;
            (dtype, u64::from(read_u32(&mut r)?))
        } else {
            let size = read_u8(&mut r)?;
            let dtype = Dtype::from_item_size(size)
                .ok_or_else(|| bad(format!("{name}: неизвестный размер элемента {size}")))?;
            (dtype, u64::from(read_u32(&mut r)?) * u64::from(size))
        };
        let elements: u64 = shape.iter().map(|&d| d as u64).product();
        if elements * dtype.size() != bytes {
            return Err(bad(format!(
                "{name}: {bytes} байт не соответствуют форме {shape:?}"
            )));
        }
        let offset = r.stream_position()?;
        let scalar = if bytes <= 8 {
            let mut data = vec![0u8; bytes as usize];
            r.read_exact(&mut data)?;
            Some(data)
        } else {
            r.seek_relative(bytes as i64)?;
            None
        };
        variables.insert(
            name,
            Variable {
                shape,
                dtype,
                offset,
                scalar,
            },
        );
    }
    if version >= 3 {
        // Tied weights (the decoder's output projection is the embedding
        // matrix) are stored once and named again here.
        let aliases = read_u32(&mut r)?;
        for _ in 0..aliases {
            let alias = read_string(&mut r)?;
            let target = read_string(&mut r)?;
            if let Some(variable) = variables.get(&target).cloned() {
                variables.insert(alias, variable);
            }
        }
    }
    let end = r.stream_position()?;
    let len = r.seek(io::SeekFrom::End(0))?;
    if end > len {
        return Err(truncated());
    }
    if end < len {
        return Err(bad(format!(
            "после описания модели лишние {} байт",
            len - end
        )));
    }
    Ok(Ct2Model { spec, variables })
}
