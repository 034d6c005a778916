//! The ring's shared memory, checked once when the ring is made, and unchecked volatile
//! access to its header and entries afterwards.
//!
//! [`RingMem::new`] checks that the memory spans the layout (`len >= layout.bytes()`), so
//! every slot the index arithmetic can name (`ring_offset + (idx & (nr_ents - 1)) *
//! entry_size`, plus one entry) and every header field lies inside it. The hot path then
//! reads and writes at `base + offset` without a bounds check per access, as the C macros
//! do, and copies entries with volatile word accesses (never an aggregate `read_volatile`,
//! which compiles to one access per byte of a byte array). Writes of 32 bytes or more to
//! 16-byte-aligned addresses use 16-byte stores on x86_64, as the C compiler does for a
//! `memset` or a struct copy into a slot.

use std::marker::PhantomData;
use std::mem::{align_of, size_of, MaybeUninit};
use std::ptr::NonNull;
use std::sync::atomic::AtomicU32;

use xen_types::mem::{Pod, SharedMemory};

use crate::layout::{slot_align, union_entry_size, RingLayout, SringField};
use crate::RingError;

/// The memory of a ring and its layout, with the base address taken once.
pub(crate) struct RingMem<M> {
    mem: M,
    base: NonNull<u8>,
    /// `&ring[0]`: `base + ring_offset`.
    entries: NonNull<u8>,
    /// `nr_ents - 1`.
    mask: u32,
    layout: RingLayout,
}

// SAFETY: `base` is `mem.as_ptr()`, used only as `mem` itself would be (volatile and atomic
// accesses to shared memory, which `SharedMemory: Send + Sync` already allows from any
// thread); it adds no thread-affine state.
unsafe impl<M: Send> Send for RingMem<M> {}
// SAFETY: as above; `&RingMem` gives only atomic header views and reads.
unsafe impl<M: Sync> Sync for RingMem<M> {}

impl<M: SharedMemory> RingMem<M> {
    /// The ring over `mem`, after [`RingLayout::validate`]: the memory spans the layout and
    /// is writable.
    pub(crate) fn new(mem: M, layout: RingLayout) -> Result<Self, RingError> {
        layout.validate(&mem)?;
        let base = NonNull::new(mem.as_ptr()).ok_or(RingError::Layout("null memory"))?;
        // SAFETY: `ring_offset < bytes <= mem.len()` (validated): inside the mapping.
        let entries = unsafe { base.add(layout.ring_offset()) };
        Ok(RingMem {
            mem,
            base,
            entries,
            mask: layout.nr_ents() - 1,
            layout,
        })
    }

    /// As [`new`](Self::new), for entries of `Req` and `Rsp` read and written as values:
    /// each fits in an entry and every slot is aligned for both.
    pub(crate) fn typed<Req, Rsp>(mem: M, layout: RingLayout) -> Result<Self, RingError> {
        let r = Self::new(mem, layout)?;
        let align = align_of::<Req>().max(align_of::<Rsp>());
        if size_of::<Req>().max(size_of::<Rsp>()) > layout.entry_size()
            || layout.entry_size() != union_entry_size::<Req, Rsp>()
            || layout.entry_size() % align != 0
            || layout.ring_offset() % align != 0
            || r.base.as_ptr() as usize % align.max(slot_align::<Req, Rsp>()) != 0
        {
            return Err(RingError::Layout("entries do not fit the ring's slots"));
        }
        Ok(r)
    }
}

impl<M> RingMem<M> {
    pub(crate) fn mem(&self) -> &M {
        &self.mem
    }

    pub(crate) fn into_mem(self) -> M {
        self.mem
    }

    pub(crate) fn layout(&self) -> &RingLayout {
        &self.layout
    }

    /// The header field `f`.
    #[inline(always)]
    pub(crate) fn hdr(&self, f: SringField) -> &AtomicU32 {
        // SAFETY: `new` checked that the memory spans the layout, which is more than the
        // 64-byte header; the base is page-aligned (SharedMemory contract), so the field is
        // 4-byte aligned; AtomicU32 may alias memory the peer accesses atomically; the
        // borrow of `self` keeps `mem` (and so the mapping) alive.
        unsafe { &*self.base.as_ptr().add(f.offset()).cast::<AtomicU32>() }
    }

    /// The address of the slot of free-running index `idx` (`RING_GET_REQUEST`) in a ring
    /// made by [`typed`](RingMem::typed) for `Req`/`Rsp`, whose entry size is a constant (a
    /// shift instead of a multiplication).
    #[inline(always)]
    pub(crate) fn typed_slot<Req, Rsp>(&self, idx: u32) -> NonNull<u8> {
        debug_assert_eq!(self.layout.entry_size(), union_entry_size::<Req, Rsp>());
        // SAFETY: `typed` checked that the layout's entry size is this one, so the offset
        // `ring_offset + (idx & mask) * entry_size` is below `ring_offset + nr_ents *
        // entry_size <= bytes`, and `new` checked `bytes <= mem.len()`: inside the mapping.
        unsafe {
            self.entries
                .add((idx & self.mask) as usize * union_entry_size::<Req, Rsp>())
        }
    }
}

impl<M> RingMem<M> {
    /// The slot of `idx` as an entry of type `T` to write, in a ring made by
    /// [`typed`](RingMem::typed) for `Req`/`Rsp`.
    ///
    /// # Safety
    ///
    /// The ring was made by `typed::<Req, Rsp>`, and `T` is `Req` or `Rsp`.
    #[inline(always)]
    pub(crate) unsafe fn slot_mut<Req, Rsp, T: Pod>(&self, idx: u32) -> SlotMut<'_, T> {
        // SAFETY: `typed` checked that a `T` fits every slot and that the memory is aligned
        // to `slot_align` (so every slot is: the entry size and ring offset are multiples of
        // it); the slot borrows the ring, which keeps the memory mapped.
        unsafe { SlotMut::new(self.typed_slot::<Req, Rsp>(idx), slot_align::<Req, Rsp>()) }
    }

    /// The slot of `idx` as an entry of type `T` to read; as [`slot_mut`](Self::slot_mut).
    ///
    /// # Safety
    ///
    /// As [`slot_mut`](Self::slot_mut).
    #[inline(always)]
    pub(crate) unsafe fn slot<Req, Rsp, T: Pod>(&self, idx: u32) -> Slot<'_, T> {
        // SAFETY: as in `slot_mut`.
        unsafe { Slot::new(self.typed_slot::<Req, Rsp>(idx), slot_align::<Req, Rsp>()) }
    }
}

/// The widest word (1, 2, 4 or 8 bytes) that divides both `align` and `len`: the unit of a
/// volatile copy of `len` bytes at an address aligned to `align`.
#[inline(always)]
const fn word(align: usize, len: usize) -> usize {
    let mut w = 8;
    while w > 1 && (align % w != 0 || len % w != 0) {
        w /= 2;
    }
    w
}

macro_rules! copy_words {
    ($w:ty, $n:expr, |$i:ident| $body:expr) => {{
        let mut $i = 0;
        while $i < $n / size_of::<$w>() {
            $body;
            $i += 1;
        }
    }};
}

/// Reads a `T` at `src` (aligned to `align`, a power of two) once, with volatile word reads.
///
/// # Safety
///
/// `src` is valid for reads of `size_of::<T>()` bytes and aligned to `align`, and
/// `align` is a power of two.
#[inline(always)]
pub(crate) unsafe fn read_volatile_words<T: Pod>(src: *const u8, align: usize) -> T {
    let n = size_of::<T>();
    let mut out = MaybeUninit::<T>::uninit();
    let dst = out.as_mut_ptr().cast::<u8>();
    // SAFETY: (all arms) word `i` lies inside both `src` (valid for `n` bytes) and `out`
    // (`n` bytes); `src` is aligned to the word (it divides `align`); `out` is written
    // unaligned.
    unsafe {
        match word(align, n) {
            8 => copy_words!(u64, n, |i| dst
                .cast::<u64>()
                .add(i)
                .write_unaligned(src.cast::<u64>().add(i).read_volatile())),
            4 => copy_words!(u32, n, |i| dst
                .cast::<u32>()
                .add(i)
                .write_unaligned(src.cast::<u32>().add(i).read_volatile())),
            2 => copy_words!(u16, n, |i| dst
                .cast::<u16>()
                .add(i)
                .write_unaligned(src.cast::<u16>().add(i).read_volatile())),
            _ => copy_words!(u8, n, |i| dst.add(i).write(src.add(i).read_volatile())),
        }
        // Every byte of `out` was written, and T is Pod: any bytes are a valid T.
        out.assume_init()
    }
}

/// Writes `v` at `dst` (aligned to `align`, a power of two) with volatile word writes.
///
/// # Safety
///
/// `dst` is valid for writes of `size_of::<T>()` bytes and aligned to `align`, and `align`
/// is a power of two.
#[inline(always)]
pub(crate) unsafe fn write_volatile_words<T: Pod>(dst: *mut u8, align: usize, v: T) {
    let n = size_of::<T>();
    let src = (&raw const v).cast::<u8>();
    // 16-byte stores for long runs (a payload, a whole request), as GCC writes a `memset` or
    // a struct copy; SSE2 is part of x86_64. Shorter values stay in general registers.
    #[cfg(target_arch = "x86_64")]
    if align >= 16 && n >= 32 && n % 16 == 0 {
        use std::arch::x86_64::__m128i;
        // SAFETY: 16-byte word `i` lies inside both `v` and `dst` (valid for `n` bytes);
        // `dst` is 16-byte aligned (`align`); `v` is read unaligned.
        unsafe {
            copy_words!(__m128i, n, |i| dst
                .cast::<__m128i>()
                .add(i)
                .write_volatile(src.cast::<__m128i>().add(i).read_unaligned()));
        }
        return;
    }
    // SAFETY: (all arms) word `i` lies inside both `v` and `dst` (valid for `n` bytes);
    // `dst` is aligned to the word; `v` is read unaligned.
    unsafe {
        match word(align, n) {
            8 => copy_words!(u64, n, |i| dst
                .cast::<u64>()
                .add(i)
                .write_volatile(src.cast::<u64>().add(i).read_unaligned())),
            4 => copy_words!(u32, n, |i| dst
                .cast::<u32>()
                .add(i)
                .write_volatile(src.cast::<u32>().add(i).read_unaligned())),
            2 => copy_words!(u16, n, |i| dst
                .cast::<u16>()
                .add(i)
                .write_volatile(src.cast::<u16>().add(i).read_unaligned())),
            _ => copy_words!(u8, n, |i| dst.add(i).write_volatile(src.add(i).read())),
        }
    }
}

/// One request or response slot of a ring, to fill in place: the next request of a
/// [`FrontRing`](crate::FrontRing) ([`next_request`](crate::FrontRing::next_request)) or the
/// next response of a [`BackRing`](crate::BackRing)
/// ([`next_response`](crate::BackRing::next_response)).
///
/// The slot lives in memory the peer can write at any time, so it is never a Rust reference:
/// [`write`](Self::write) stores a whole entry and [`set`](Self::set) one field, both with
/// volatile word stores and no bounds check (the ring proved the slot in bounds when it was
/// made). The peer sees what was written after the next push.
pub struct SlotMut<'a, T> {
    ptr: NonNull<u8>,
    /// The alignment of `ptr` (at least `T`'s; a constant where the ring makes the slot).
    align: usize,
    _slot: PhantomData<&'a mut T>,
}

impl<T> std::fmt::Debug for SlotMut<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlotMut").field("ptr", &self.ptr).finish()
    }
}

impl<T: Pod> SlotMut<'_, T> {
    /// A slot at `ptr`, aligned to `align`.
    ///
    /// # Safety
    ///
    /// `ptr` is valid for volatile writes of `size_of::<T>()` bytes for the lifetime of the
    /// slot, and aligned to `align`, a power of two at least `align_of::<T>()`.
    #[inline(always)]
    pub(crate) unsafe fn new(ptr: NonNull<u8>, align: usize) -> Self {
        debug_assert!(align.is_power_of_two() && align >= align_of::<T>());
        debug_assert_eq!(ptr.as_ptr() as usize % align, 0);
        SlotMut {
            ptr,
            align,
            _slot: PhantomData,
        }
    }

    /// Writes the whole entry (`*RING_GET_REQUEST(r, i) = v`).
    #[inline(always)]
    pub fn write(&mut self, v: T) {
        // SAFETY: `new`'s contract: `size_of::<T>()` writable bytes aligned to `align`.
        unsafe { write_volatile_words(self.ptr.as_ptr(), self.align, v) }
    }

    /// Writes one field of the entry: `v` at byte `offset` (`offset_of!(T, field)`), as
    /// `RING_GET_REQUEST(r, i)->field = v` does; the other bytes of the slot keep whatever
    /// they held.
    ///
    /// # Panics
    ///
    /// When `v` would not lie inside a `T` or `offset` is not aligned for `F` (with a
    /// constant `offset` both checks fold away).
    #[inline(always)]
    pub fn set<F: Pod>(&mut self, offset: usize, v: F) {
        let align = field_align::<T, F>(self.align, offset);
        // SAFETY: `field_align` checked that the field lies inside the slot `new` promises,
        // and the address is aligned to `align`.
        unsafe { write_volatile_words(self.ptr.as_ptr().add(offset), align, v) }
    }

    /// The slot's address, for writes [`write`](Self::write) and [`set`](Self::set) cannot
    /// express. It is valid for `size_of::<T>()` bytes while the slot lives and shared with
    /// the peer: write it with volatile or raw-pointer stores, never through a reference.
    pub fn as_ptr(&self) -> *mut T {
        self.ptr.as_ptr().cast()
    }
}

/// One published request or response, read in place: the request a
/// [`BackRing`](crate::BackRing) consumed with [`next_request`](crate::BackRing::next_request),
/// or the response a [`FrontRing`](crate::FrontRing) consumed with
/// [`next_response`](crate::FrontRing::next_response).
///
/// The peer can rewrite the slot at any time, so every [`get`](Self::get) is a fresh
/// volatile read: read each field once and check the value you read (or take one copy of the
/// whole entry with [`read`](Self::read), `RING_COPY_REQUEST`). No bounds check per read:
/// the ring proved the slot in bounds when it was made.
pub struct Slot<'a, T> {
    ptr: NonNull<u8>,
    /// The alignment of `ptr` (at least `T`'s).
    align: usize,
    _slot: PhantomData<&'a T>,
}

impl<T> std::fmt::Debug for Slot<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot").field("ptr", &self.ptr).finish()
    }
}

impl<T: Pod> Slot<'_, T> {
    /// A slot at `ptr`, aligned to `align`.
    ///
    /// # Safety
    ///
    /// `ptr` is valid for volatile reads of `size_of::<T>()` bytes for the lifetime of the
    /// slot, and aligned to `align`, a power of two at least `align_of::<T>()`.
    #[inline(always)]
    pub(crate) unsafe fn new(ptr: NonNull<u8>, align: usize) -> Self {
        debug_assert!(align.is_power_of_two() && align >= align_of::<T>());
        debug_assert_eq!(ptr.as_ptr() as usize % align, 0);
        Slot {
            ptr,
            align,
            _slot: PhantomData,
        }
    }

    /// One copy of the whole entry (`RING_COPY_REQUEST`/`RING_COPY_RESPONSE`).
    #[inline(always)]
    pub fn read(&self) -> T {
        // SAFETY: `new`'s contract: `size_of::<T>()` readable bytes aligned to `align`.
        unsafe { read_volatile_words(self.ptr.as_ptr(), self.align) }
    }

    /// One field of the entry: the `F` at byte `offset` (`offset_of!(T, field)`), read once.
    ///
    /// # Panics
    ///
    /// As [`SlotMut::set`].
    #[inline(always)]
    pub fn get<F: Pod>(&self, offset: usize) -> F {
        let align = field_align::<T, F>(self.align, offset);
        // SAFETY: `field_align` checked that the field lies inside the slot `new` promises,
        // and the address is aligned to `align`.
        unsafe { read_volatile_words(self.ptr.as_ptr().add(offset), align) }
    }
}

/// The alignment of the address of an `F` at `offset` in a `T` whose address is aligned to
/// `align` (at least `T`'s), after checking that the field lies inside the `T` and is aligned
/// for `F` (with a constant `offset` and `align` everything folds away).
#[inline(always)]
fn field_align<T, F>(align: usize, offset: usize) -> usize {
    assert!(
        offset <= size_of::<T>()
            && size_of::<F>() <= size_of::<T>() - offset
            && align_of::<F>() <= align_of::<T>()
            && offset % align_of::<F>() == 0,
        "field at {offset} does not lie inside the entry"
    );
    // The largest power of two dividing both the entry's alignment and the offset.
    if offset == 0 {
        align
    } else {
        align.min(1 << offset.trailing_zeros())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_divide_alignment_and_length() {
        assert_eq!(word(8, 64), 8);
        assert_eq!(word(8, 12), 4);
        assert_eq!(word(4, 108), 4);
        assert_eq!(word(2, 12), 2);
        assert_eq!(word(1, 48), 1);
        assert_eq!(word(16, 48), 8);
        assert_eq!(word(8, 1), 1);
    }

    #[test]
    fn volatile_word_copies_round_trip() {
        let mut buf = [0u64; 8];
        let p = buf.as_mut_ptr().cast::<u8>();
        let v: [u8; 12] = *b"hello, ring!";
        // SAFETY: `buf` is 64 bytes, 8-aligned; offsets 0 and 4 leave room for 12 bytes.
        unsafe {
            write_volatile_words(p, 8, v);
            assert_eq!(read_volatile_words::<[u8; 12]>(p, 8), v);
            write_volatile_words(p.add(4), 4, 0xdead_beef_u32);
            assert_eq!(read_volatile_words::<u32>(p.add(4), 4), 0xdead_beef);
            assert_eq!(read_volatile_words::<[u8; 4]>(p, 1), *b"hell");
        }
        // The 16-byte path: 48 bytes at a 16-aligned address, the bytes around untouched.
        #[repr(align(16))]
        struct A([u8; 80]);
        let mut a = A([0xee; 80]);
        let v: [u8; 48] = std::array::from_fn(|i| i as u8);
        // SAFETY: bytes 16..64 of a 16-aligned 80-byte buffer.
        unsafe {
            let p = a.0.as_mut_ptr().add(16);
            write_volatile_words(p, 16, v);
            assert_eq!(read_volatile_words::<[u8; 48]>(p, 16), v);
        }
        assert_eq!(&a.0[16..64], &v[..]);
        assert!(a.0[..16].iter().chain(&a.0[64..]).all(|&b| b == 0xee));
    }

    #[test]
    fn set_writes_one_field() {
        #[repr(C)]
        #[derive(Clone, Copy)]
        struct E {
            a: u64,
            b: u32,
            c: [u8; 4],
        }
        // SAFETY: integers and a byte array, no padding.
        unsafe impl Pod for E {}
        let mut buf = [0u64; 2];
        let p = NonNull::new(buf.as_mut_ptr().cast::<u8>()).unwrap();
        // SAFETY: `buf` is 16 writable bytes aligned to 8, as E needs.
        let mut s = unsafe { SlotMut::<E>::new(p, 8) };
        s.write(E {
            a: 1,
            b: 2,
            c: [3; 4],
        });
        s.set(std::mem::offset_of!(E, b), 7u32);
        s.set(std::mem::offset_of!(E, c), [9u8; 4]);
        assert_eq!(buf[0], 1);
        assert_eq!(buf[1].to_le_bytes(), [7, 0, 0, 0, 9, 9, 9, 9]);
        // SAFETY: as above, for reads.
        let r = unsafe { Slot::<E>::new(p, 8) };
        assert_eq!(r.get::<u32>(std::mem::offset_of!(E, b)), 7);
        assert_eq!(r.get::<u8>(std::mem::offset_of!(E, c) + 3), 9);
        assert_eq!(r.read().a, 1);
    }

    #[test]
    #[should_panic(expected = "does not lie inside")]
    fn set_refuses_a_field_past_the_entry() {
        let mut buf = [0u64; 1];
        let p = NonNull::new(buf.as_mut_ptr().cast::<u8>()).unwrap();
        // SAFETY: 8 writable bytes aligned to 8.
        let mut s = unsafe { SlotMut::<u64>::new(p, 8) };
        s.set(4, 0u64);
    }
}
