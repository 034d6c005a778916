//! Kernel images as the PV domain builder reads them: a Xen ELF image or a Linux bzImage,
//! checked as libxenguest's loaders check them.

use xen_types::Errno;

/// The kinds of kernel image the builder accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageKind {
    /// A Xen ELF image (64-bit).
    Elf64,
    /// A Xen ELF image (32-bit).
    Elf32,
    /// A Linux bzImage (x86 boot protocol 2.08 or later, compressed ELF payload).
    BzImage,
}

/// What the builder learnt from a kernel image.
pub(crate) struct KernelImage {
    pub(crate) kind: ImageKind,
    /// Bytes of guest memory the loaded kernel occupies.
    pub(crate) mem_size: u64,
}

fn rd<const N: usize>(b: &[u8], off: usize) -> Option<[u8; N]> {
    b.get(off..off.checked_add(N)?)?.try_into().ok()
}
fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    rd::<2>(b, off).map(u16::from_le_bytes)
}
fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    rd::<4>(b, off).map(u32::from_le_bytes)
}
fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    rd::<8>(b, off).map(u64::from_le_bytes)
}

/// Checks a kernel image as libxenguest's loaders do: a Xen ELF image (x86, executable,
/// program headers inside the file, and Xen ELF notes or a `__xen_guest` section), or a
/// bzImage. Anything else is `EINVAL`.
pub(crate) fn parse_kernel(k: &[u8]) -> Result<KernelImage, Errno> {
    if k.get(..4) == Some(&[libc::ELFMAG0, libc::ELFMAG1, libc::ELFMAG2, libc::ELFMAG3]) {
        return parse_elf(k).ok_or(Errno::EINVAL);
    }
    // x86 boot protocol: "HdrS" at 0x202, version at 0x206, setup_sects at 0x1f1,
    // payload_offset/length at 0x248/0x24c (2.08+), init_size at 0x260 (2.10+).
    if k.get(0x202..0x206) == Some(b"HdrS") {
        return parse_bzimage(k).ok_or(Errno::EINVAL);
    }
    Err(Errno::EINVAL)
}

fn parse_bzimage(k: &[u8]) -> Option<KernelImage> {
    let version = u16_at(k, 0x206)?;
    if version < 0x208 {
        return None;
    }
    let setup_sects = match *k.get(0x1f1)? {
        0 => 4,
        n => usize::from(n),
    };
    let payload_off = usize::try_from(u32_at(k, 0x248)?).ok()?;
    let payload_len = usize::try_from(u32_at(k, 0x24c)?).ok()?;
    let start = (setup_sects + 1) * 512 + payload_off;
    let payload = k.get(start..start.checked_add(payload_len)?)?;
    // The payload is a compressed ELF: accept the formats Linux uses.
    let compressed = payload.starts_with(&[0x1f, 0x8b])
        || payload.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0])
        || payload.starts_with(b"BZh")
        || payload.starts_with(&[0x89, b'L', b'Z', b'O'])
        || payload.starts_with(&[0x02, 0x21, 0x4c, 0x18])
        || payload.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        || payload.starts_with(&[0x5d, 0x00])
        || payload.starts_with(&[libc::ELFMAG0, libc::ELFMAG1, libc::ELFMAG2, libc::ELFMAG3]);
    if !compressed {
        return None;
    }
    let init_size = if version >= 0x20a {
        u64::from(u32_at(k, 0x260)?)
    } else {
        payload_len as u64 * 4
    };
    Some(KernelImage {
        kind: ImageKind::BzImage,
        mem_size: init_size.max(payload_len as u64),
    })
}

fn parse_elf(k: &[u8]) -> Option<KernelImage> {
    let class = *k.get(4)?;
    let is64 = match class {
        libc::ELFCLASS64 => true,
        libc::ELFCLASS32 => false,
        _ => return None,
    };
    if *k.get(5)? != libc::ELFDATA2LSB {
        return None;
    }
    let e_type = u16_at(k, 16)?;
    let machine = u16_at(k, 18)?;
    if e_type != libc::ET_EXEC || !(machine == libc::EM_X86_64 || machine == libc::EM_386) {
        return None;
    }
    let (phoff, phentsize, phnum, shoff, shentsize, shnum, shstrndx) = if is64 {
        (
            u64_at(k, 32)?,
            u16_at(k, 54)?,
            u16_at(k, 56)?,
            u64_at(k, 40)?,
            u16_at(k, 58)?,
            u16_at(k, 60)?,
            u16_at(k, 62)?,
        )
    } else {
        (
            u64::from(u32_at(k, 28)?),
            u16_at(k, 42)?,
            u16_at(k, 44)?,
            u64::from(u32_at(k, 32)?),
            u16_at(k, 46)?,
            u16_at(k, 48)?,
            u16_at(k, 50)?,
        )
    };
    let min_phent = if is64 { 56 } else { 32 };
    if phnum == 0 || usize::from(phentsize) < min_phent {
        return None;
    }
    let mut lo = u64::MAX;
    let mut hi = 0u64;
    let mut xen_notes = false;
    for i in 0..usize::from(phnum) {
        let off = usize::try_from(phoff)
            .ok()?
            .checked_add(i * usize::from(phentsize))?;
        let ph = k.get(off..off.checked_add(min_phent)?)?;
        let (p_type, p_offset, p_vaddr, p_filesz, p_memsz) = if is64 {
            (
                u32_at(ph, 0)?,
                u64_at(ph, 8)?,
                u64_at(ph, 16)?,
                u64_at(ph, 32)?,
                u64_at(ph, 40)?,
            )
        } else {
            let w = |o| u32_at(ph, o).map(u64::from);
            (u32_at(ph, 0)?, w(4)?, w(8)?, w(16)?, w(20)?)
        };
        // Every segment's bytes must lie inside the file.
        let end = p_offset.checked_add(p_filesz)?;
        if end > k.len() as u64 || p_filesz > p_memsz && p_type == libc::PT_LOAD {
            return None;
        }
        if p_type == libc::PT_LOAD && p_memsz > 0 {
            lo = lo.min(p_vaddr);
            hi = hi.max(p_vaddr.checked_add(p_memsz)?);
        }
        if p_type == libc::PT_NOTE && has_xen_note(&k[p_offset as usize..end as usize]) {
            xen_notes = true;
        }
    }
    if lo >= hi {
        return None;
    }
    if !xen_notes && !has_xen_guest_section(k, is64, shoff, shentsize, shnum, shstrndx) {
        return None;
    }
    Some(KernelImage {
        kind: if is64 {
            ImageKind::Elf64
        } else {
            ImageKind::Elf32
        },
        mem_size: hi - lo,
    })
}

/// True when an ELF note segment holds a note named "Xen".
fn has_xen_note(mut notes: &[u8]) -> bool {
    while notes.len() >= 12 {
        let (Some(namesz), Some(descsz)) = (u32_at(notes, 0), u32_at(notes, 4)) else {
            return false;
        };
        let namesz = namesz as usize;
        let name_end = 12 + namesz;
        let desc_start = 12 + namesz.div_ceil(4) * 4;
        let Some(next) = desc_start.checked_add((descsz as usize).div_ceil(4) * 4) else {
            return false;
        };
        if let Some(name) = notes.get(12..name_end) {
            if name == b"Xen\0" || name == b"Xen" {
                return true;
            }
        }
        match notes.get(next..) {
            Some(rest) => notes = rest,
            None => return false,
        }
    }
    false
}

/// True when the image has a section named `__xen_guest` (the pre-notes Xen guest marker).
fn has_xen_guest_section(
    k: &[u8],
    is64: bool,
    shoff: u64,
    shentsize: u16,
    shnum: u16,
    shstrndx: u16,
) -> bool {
    let sh = |i: u16| -> Option<(u32, u64, u64)> {
        let off = usize::try_from(shoff)
            .ok()?
            .checked_add(usize::from(i) * usize::from(shentsize))?;
        if is64 {
            Some((u32_at(k, off)?, u64_at(k, off + 24)?, u64_at(k, off + 32)?))
        } else {
            let w = |o| u32_at(k, off + o).map(u64::from);
            Some((u32_at(k, off)?, w(16)?, w(20)?))
        }
    };
    let Some((_, str_off, str_size)) = sh(shstrndx) else {
        return false;
    };
    let Some(strtab) = k.get(str_off as usize..(str_off.saturating_add(str_size)) as usize) else {
        return false;
    };
    (0..shnum).any(|i| {
        sh(i).is_some_and(|(name, _, _)| {
            strtab
                .get(name as usize..)
                .is_some_and(|s| s.starts_with(b"__xen_guest\0"))
        })
    })
}

/// A tiny x86-64 Xen ELF image: one loadable segment of `mem` bytes and a `Xen` ELF note
/// (`XEN_ELFNOTE_GUEST_OS` = "linux"). Enough for the simulated builder's checks (tests
/// build guests with it); it is not a kernel that boots.
pub fn sample_kernel(mem: u64) -> Vec<u8> {
    let mut k = vec![0u8; 64 + 2 * 56];
    k[..4].copy_from_slice(b"\x7fELF");
    k[4] = 2; // ELFCLASS64
    k[5] = 1; // ELFDATA2LSB
    k[6] = 1; // EV_CURRENT
    k[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    k[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    k[24..32].copy_from_slice(&0xffff_ffff_8100_0000u64.to_le_bytes()); // e_entry
    k[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
    k[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
    k[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
    k[56..58].copy_from_slice(&2u16.to_le_bytes()); // e_phnum
    let note_off = k.len() as u64;
    let mut note = Vec::new();
    for w in [4u32, 6, 6] {
        note.extend_from_slice(&w.to_le_bytes());
    }
    note.extend_from_slice(b"Xen\0linux\0\0\0");
    k.extend_from_slice(&note);
    k.extend_from_slice(&[0xf4; 16]); // hlt
    let len = k.len() as u64;
    let mut ph = |i: usize, ty: u32, off: u64, vaddr: u64, filesz: u64, memsz: u64| {
        let b = 64 + i * 56;
        k[b..b + 4].copy_from_slice(&ty.to_le_bytes());
        k[b + 4..b + 8].copy_from_slice(&5u32.to_le_bytes()); // R+X
        k[b + 8..b + 16].copy_from_slice(&off.to_le_bytes());
        k[b + 16..b + 24].copy_from_slice(&vaddr.to_le_bytes());
        k[b + 24..b + 32].copy_from_slice(&vaddr.to_le_bytes());
        k[b + 32..b + 40].copy_from_slice(&filesz.to_le_bytes());
        k[b + 40..b + 48].copy_from_slice(&memsz.to_le_bytes());
    };
    ph(0, 1, 0, 0xffff_ffff_8100_0000, len, mem);
    ph(1, 4, note_off, 0, note.len() as u64, note.len() as u64);
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_kernels_are_einval() {
        assert_eq!(parse_kernel(b"").err(), Some(Errno::EINVAL));
        assert_eq!(parse_kernel(&[0u8; 4096]).err(), Some(Errno::EINVAL));
        assert_eq!(parse_kernel(b"\x7fELF\x02\x01").err(), Some(Errno::EINVAL));
    }
}
