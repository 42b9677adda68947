//! Just enough of a BTF reader to find a struct member's offset in the running kernel
//! (`/sys/kernel/btf/vmlinux`), so the eBPF side can read a kernel field without guessing
//! where it lies. aya 0.14 parses BTF but keeps struct members private.
//!
//! Format: include/uapi/linux/btf.h (a header, then the type section: one `btf_type` per id
//! from 1, each followed by data whose size its kind and `vlen` give, then the strings).
use std::path::Path;

const MAGIC: u16 = 0xeb9f;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_TYPE_TAG: u32 = 18;

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("cannot read the kernel's BTF {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the kernel's BTF is malformed: {0}")]
    Malformed(&'static str),
    #[error("the kernel's BTF has no struct {0}")]
    NoStruct(String),
    #[error("the kernel's BTF has no member {member} in struct {strukt}")]
    NoMember { strukt: String, member: String },
}

/// Byte offset of `member` in struct `strukt` of the BTF file at `path`.
#[cfg(test)]
pub fn member_offset_in_file(path: &Path, strukt: &str, member: &str) -> Result<u64, BtfError> {
    let data = std::fs::read(path).map_err(|source| BtfError::Read {
        path: path.display().to_string(),
        source,
    })?;
    member_offset(&data, strukt, member)
}

/// One type of the type section: its kind, name, size-or-type and (for structs and unions)
/// members as (name, type, bit offset).
struct Type<'a> {
    kind: u32,
    name: &'a [u8],
    size_or_type: u32,
    members: Vec<(&'a [u8], u32, u32)>,
}

/// Byte offset of `member` in struct `strukt` of a BTF blob (native byte order). Members of
/// anonymous structs and unions inside it are found too, their offsets added.
#[cfg(test)]
pub fn member_offset(data: &[u8], strukt: &str, member: &str) -> Result<u64, BtfError> {
    member_offset_in(&parse(data)?, strukt, member)
}

/// Byte offsets of several (struct, member) pairs in the BTF file at `path`, parsed once.
pub fn member_offsets_in_file(path: &Path, wanted: &[(&str, &str)]) -> Result<Vec<u64>, BtfError> {
    let data = std::fs::read(path).map_err(|source| BtfError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let types = parse(&data)?;
    wanted
        .iter()
        .map(|(s, m)| member_offset_in(&types, s, m))
        .collect()
}

fn member_offset_in(types: &[Type<'_>], strukt: &str, member: &str) -> Result<u64, BtfError> {
    let by_id = |id: u32| types.get(id.checked_sub(1)? as usize);
    let root = types
        .iter()
        .find(|t| t.kind == KIND_STRUCT && t.name == strukt.as_bytes())
        .ok_or_else(|| BtfError::NoStruct(strukt.to_owned()))?;
    let not_found = || BtfError::NoMember {
        strukt: strukt.to_owned(),
        member: member.to_owned(),
    };
    // Depth-first through anonymous members; the bound stops a malformed self-reference.
    let mut todo = vec![(root, 0u64, 0u32)];
    while let Some((t, base, depth)) = todo.pop() {
        for &(name, ty, bits) in &t.members {
            let at = base + bits as u64;
            if name == member.as_bytes() {
                if !at.is_multiple_of(8) {
                    return Err(BtfError::Malformed("the member is a bitfield"));
                }
                return Ok(at / 8);
            }
            if !name.is_empty() || depth > 8 {
                continue;
            }
            // An anonymous member: a struct or union, maybe behind modifiers.
            let mut inner = by_id(ty);
            for _ in 0..8 {
                match inner {
                    Some(i)
                        if matches!(
                            i.kind,
                            KIND_TYPEDEF
                                | KIND_VOLATILE
                                | KIND_CONST
                                | KIND_RESTRICT
                                | KIND_TYPE_TAG
                        ) =>
                    {
                        inner = by_id(i.size_or_type)
                    }
                    _ => break,
                }
            }
            if let Some(i) = inner.filter(|i| matches!(i.kind, KIND_STRUCT | KIND_UNION)) {
                todo.push((i, at, depth + 1));
            }
        }
    }
    Err(not_found())
}

fn parse(data: &[u8]) -> Result<Vec<Type<'_>>, BtfError> {
    let u32_at = |off: usize| -> Result<u32, BtfError> {
        data.get(off..off + 4)
            .map(|b| u32::from_ne_bytes(b.try_into().unwrap()))
            .ok_or(BtfError::Malformed("truncated"))
    };
    let magic = data
        .get(0..2)
        .map(|b| u16::from_ne_bytes(b.try_into().unwrap()))
        .ok_or(BtfError::Malformed("truncated"))?;
    if magic != MAGIC {
        return Err(BtfError::Malformed("bad magic (or another byte order)"));
    }
    let hdr_len = u32_at(4)? as usize;
    let (type_off, type_len) = (u32_at(8)? as usize, u32_at(12)? as usize);
    let (str_off, str_len) = (u32_at(16)? as usize, u32_at(20)? as usize);
    let strings = data
        .get(hdr_len + str_off..hdr_len + str_off + str_len)
        .ok_or(BtfError::Malformed("strings out of bounds"))?;
    let name = |off: u32| -> &[u8] {
        let s = strings.get(off as usize..).unwrap_or(&[]);
        &s[..s.iter().position(|&b| b == 0).unwrap_or(s.len())]
    };
    let start = hdr_len + type_off;
    let end = start + type_len;
    if data.len() < end {
        return Err(BtfError::Malformed("types out of bounds"));
    }
    let mut types = Vec::new();
    let mut at = start;
    while at < end {
        let (name_off, info, size_or_type) = (u32_at(at)?, u32_at(at + 4)?, u32_at(at + 8)?);
        at += 12;
        let kind = (info >> 24) & 0x1f;
        let vlen = (info & 0xffff) as usize;
        let kind_flag = info >> 31 != 0;
        let mut members = Vec::new();
        let extra = match kind {
            1 | 14 | 17 => 4, // int, var, decl tag
            3 => 12,          // array
            KIND_STRUCT | KIND_UNION => {
                for m in 0..vlen {
                    let o = at + 12 * m;
                    let bits = u32_at(o + 8)?;
                    // With kind_flag the top 8 bits are a bitfield's size.
                    let bits = if kind_flag { bits & 0xff_ffff } else { bits };
                    members.push((name(u32_at(o)?), u32_at(o + 4)?, bits));
                }
                12 * vlen
            }
            6 | 13 => 8 * vlen,        // enum, function prototype
            15 | 19 => 12 * vlen,      // data section, enum64
            2 | 7..=12 | 16 | 18 => 0, // no extra data
            _ => return Err(BtfError::Malformed("unknown kind")),
        };
        at += extra;
        types.push(Type {
            kind,
            name: name(name_off),
            size_or_type,
            members,
        });
    }
    Ok(types)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A member: (name, type, bit offset).
    type Member<'a> = (&'a str, u32, u32);

    /// A BTF blob of the types given as (name, kind, size_or_type, members).
    fn blob(types: &[(&str, u32, u32, &[Member])]) -> Vec<u8> {
        let mut strings = vec![0u8];
        let mut add = |s: &str| -> u32 {
            if s.is_empty() {
                return 0;
            }
            let off = strings.len() as u32;
            strings.extend(s.as_bytes());
            strings.push(0);
            off
        };
        let mut ty = Vec::new();
        for &(name, kind, sot, members) in types {
            ty.extend(add(name).to_ne_bytes());
            ty.extend(((kind << 24) | members.len() as u32).to_ne_bytes());
            ty.extend(sot.to_ne_bytes());
            if kind == 1 {
                ty.extend(64u32.to_ne_bytes());
            }
            for &(m, t, bits) in members {
                ty.extend(add(m).to_ne_bytes());
                ty.extend(t.to_ne_bytes());
                ty.extend(bits.to_ne_bytes());
            }
        }
        let mut out = Vec::new();
        out.extend(MAGIC.to_ne_bytes());
        out.extend([1u8, 0]);
        out.extend(24u32.to_ne_bytes());
        out.extend(0u32.to_ne_bytes());
        out.extend((ty.len() as u32).to_ne_bytes());
        out.extend((ty.len() as u32).to_ne_bytes());
        out.extend((strings.len() as u32).to_ne_bytes());
        out.extend(ty);
        out.extend(strings);
        out
    }

    #[test]
    fn finds_members_also_inside_anonymous_unions() {
        // 1: unsigned long; 2: const 1; 3: union { const unsigned long vm_flags; ... };
        // 4: struct vm_area_struct { start; end; <union 3> at 32 bytes }.
        let data = blob(&[
            ("unsigned long", 1, 8, &[]),
            ("", KIND_CONST, 1, &[]),
            (
                "",
                KIND_UNION,
                8,
                &[("vm_flags", 2, 0), ("__vm_flags", 1, 0)],
            ),
            (
                "vm_area_struct",
                KIND_STRUCT,
                48,
                &[("vm_start", 1, 0), ("vm_end", 1, 64), ("", 3, 256)],
            ),
        ]);
        assert_eq!(member_offset(&data, "vm_area_struct", "vm_end").unwrap(), 8);
        assert_eq!(
            member_offset(&data, "vm_area_struct", "vm_flags").unwrap(),
            32
        );
        assert!(matches!(
            member_offset(&data, "vm_area_struct", "vm_pgoff"),
            Err(BtfError::NoMember { .. })
        ));
        assert!(matches!(
            member_offset(&data, "task_struct", "mm"),
            Err(BtfError::NoStruct(_))
        ));
        assert!(matches!(
            member_offset(&data[..30], "vm_area_struct", "vm_end"),
            Err(BtfError::Malformed(_))
        ));
    }

    #[test]
    fn finds_vm_flags_in_the_running_kernel() {
        // The kernel alloctrace needs has BTF (bpf_find_vma and task storage need it too).
        let off = member_offset_in_file(
            Path::new("/sys/kernel/btf/vmlinux"),
            "vm_area_struct",
            "vm_flags",
        )
        .unwrap();
        // vm_start and vm_end come first, and the struct is far smaller than a page.
        assert!((16..512).contains(&off), "{off}");
        assert_eq!(off % 8, 0);
    }
}
