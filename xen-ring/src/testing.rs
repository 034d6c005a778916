//! Test peers shared by the tests, benches and fuzzers (feature `test-utils`).
//!
//! - [`TestReq`]/[`TestRsp`]: the test ring type (64-byte request with an id and a payload
//!   checksum, 16-byte response), the same as `struct xrt_req`/`xrt_rsp` in `csrc/ring_ref.c`.
//! - [`Workload`]: how a driver loop fills, serves and checks entries ([`TestWorkload`],
//!   [`BlkifWorkload`]: the same checks as the C peer).
//! - [`Doorbell`]: an eventfd standing in for an event channel.
//! - [`run_front`]/[`run_back`]: the driver loops of a C front/back end, on our rings.
//! - [`cref`]: the C reference peer built from Debian's `ring.h` (when the header was found
//!   at build time).

use std::io;
use std::mem::offset_of;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use xen_sys::{blkif_request, blkif_response};
use xen_types::mem::{Pod, SharedMemory};

use crate::{BackRing, FrontRing, RingError, Slot, SlotMut};

/// Bytes of payload in a [`TestReq`].
pub const TEST_PAYLOAD: usize = 48;

/// The test request: 64 bytes (`struct xrt_req`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TestReq {
    /// Sequence number.
    pub id: u64,
    /// Payload bytes covered by the checksum, 1..=48.
    pub len: u32,
    /// [`checksum`] of `id` and `payload[..len]`.
    pub csum: u32,
    /// Payload.
    pub payload: [u8; TEST_PAYLOAD],
}

/// The test response: 16 bytes (`struct xrt_rsp`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TestRsp {
    /// The request's id.
    pub id: u64,
    /// The checksum the back end computed.
    pub csum: u32,
    /// 0 when the request's checksum matched, -1 otherwise.
    pub status: i32,
}

impl Default for TestReq {
    fn default() -> Self {
        TestReq {
            id: 0,
            len: 0,
            csum: 0,
            payload: [0; TEST_PAYLOAD],
        }
    }
}

// SAFETY: repr(C) structs of integers and byte arrays without padding (64 = 8+4+4+48 and
// 16 = 8+4+4); every bit pattern is valid.
unsafe impl Pod for TestReq {}
// SAFETY: as above.
unsafe impl Pod for TestRsp {}

const _: () = assert!(size_of::<TestReq>() == 64 && size_of::<TestRsp>() == 16);

fn fnv1a(mut h: u32, bytes: &[u8]) -> u32 {
    for &b in bytes {
        h ^= u32::from(b);
        h = h.wrapping_mul(16_777_619);
    }
    h
}

/// FNV-1a of `id` (little endian) then `payload[..len]` (`xrt_checksum`).
pub fn checksum(id: u64, payload: &[u8; TEST_PAYLOAD], len: u32) -> u32 {
    let h = fnv1a(2_166_136_261, &id.to_le_bytes());
    fnv1a(h, &payload[..(len as usize).min(TEST_PAYLOAD)])
}

impl TestReq {
    /// Request number `i` of a test stream (`xrt_fill`).
    pub fn nth(i: u64) -> TestReq {
        let mut payload = [0u8; TEST_PAYLOAD];
        for (k, b) in payload.iter_mut().enumerate() {
            *b = (i.wrapping_mul(31).wrapping_add(k as u64 * 7)) as u8;
        }
        let len = 1 + (i % TEST_PAYLOAD as u64) as u32;
        TestReq {
            id: i,
            len,
            csum: checksum(i, &payload, len),
            payload,
        }
    }
}

/// What a driver loop puts on the ring and how it checks what comes back.
pub trait Workload {
    /// Request type.
    type Req: Pod + Default;
    /// Response type.
    type Rsp: Pod + Default;
    /// Request number `i`.
    fn request(i: u64) -> Self::Req;
    /// Writes request number `i` into its ring slot (the C peer's `FILL` on
    /// `RING_GET_REQUEST`); by default the whole [`request`](Self::request).
    #[inline]
    fn fill(slot: &mut SlotMut<'_, Self::Req>, i: u64) {
        slot.write(Self::request(i));
    }
    /// The back end's answer, or `None` when the request is malformed.
    fn serve(req: &Self::Req) -> Option<Self::Rsp>;
    /// The answer to the request in `slot`, read in place; by default [`serve`](Self::serve)
    /// of one copy of it (`RING_COPY_REQUEST`).
    #[inline]
    fn serve_slot(slot: &Slot<'_, Self::Req>) -> Option<Self::Rsp> {
        Self::serve(&slot.read())
    }
    /// Answers the request in `q` by filling the response slot `s` in place (which may be
    /// `q`'s own slot: read first); false when the request is malformed (`s` then holds an
    /// error answer). By default [`serve_slot`](Self::serve_slot) written whole.
    #[inline]
    fn serve_into(q: &Slot<'_, Self::Req>, s: &mut SlotMut<'_, Self::Rsp>) -> bool {
        match Self::serve_slot(q) {
            Some(rsp) => {
                s.write(rsp);
                true
            }
            None => {
                s.write(Self::Rsp::default());
                false
            }
        }
    }
    /// Whether `rsp` is the right answer to request number `i`.
    fn check(rsp: &Self::Rsp, i: u64) -> bool;
}

/// The test ring type's workload (`xrt_fill`, `xrt_serve`, `xrt_check` in C).
#[derive(Debug)]
pub struct TestWorkload;

impl Workload for TestWorkload {
    type Req = TestReq;
    type Rsp = TestRsp;

    #[inline]
    fn request(i: u64) -> TestReq {
        TestReq::nth(i)
    }

    #[inline]
    fn serve(q: &TestReq) -> Option<TestRsp> {
        let c = checksum(q.id, &q.payload, q.len);
        let ok = c == q.csum && (1..=TEST_PAYLOAD as u32).contains(&q.len);
        ok.then_some(TestRsp {
            id: q.id,
            csum: c,
            status: 0,
        })
    }

    #[inline]
    fn check(s: &TestRsp, i: u64) -> bool {
        s.id == i && s.status == 0 && s.csum == TestReq::nth(i).csum
    }
}

/// The test ring type with next to no work per request (`echo_*` in C): the ring
/// operations dominate. Benches use it.
#[derive(Debug)]
pub struct EchoWorkload;

impl Workload for EchoWorkload {
    type Req = TestReq;
    type Rsp = TestRsp;

    #[inline]
    fn request(i: u64) -> TestReq {
        TestReq {
            id: i,
            len: 1,
            csum: (i as u32).wrapping_mul(2_654_435_761),
            payload: [i as u8; TEST_PAYLOAD],
        }
    }

    /// In place, field by field, as `echo_fill` in C.
    #[inline]
    fn fill(slot: &mut SlotMut<'_, TestReq>, i: u64) {
        slot.set(offset_of!(TestReq, id), i);
        slot.set(offset_of!(TestReq, len), 1u32);
        slot.set(
            offset_of!(TestReq, csum),
            (i as u32).wrapping_mul(2_654_435_761),
        );
        slot.set(offset_of!(TestReq, payload), [i as u8; TEST_PAYLOAD]);
    }

    #[inline]
    fn serve(q: &TestReq) -> Option<TestRsp> {
        Some(TestRsp {
            id: q.id,
            csum: q.csum ^ u32::from(q.payload[TEST_PAYLOAD - 1]),
            status: 0,
        })
    }

    /// The fields `echo_serve` reads, each read once in place (what GCC makes of the C
    /// peer's `RING_COPY_REQUEST`: its `volatile` qualifies the pointer, not the entry, so
    /// only the fields used are loaded).
    #[inline]
    fn serve_slot(q: &Slot<'_, TestReq>) -> Option<TestRsp> {
        let last: u8 = q.get(offset_of!(TestReq, payload) + TEST_PAYLOAD - 1);
        Some(TestRsp {
            id: q.get(offset_of!(TestReq, id)),
            csum: q.get::<u32>(offset_of!(TestReq, csum)) ^ u32::from(last),
            status: 0,
        })
    }

    /// `echo_serve` in place: the three fields read first (the response may overwrite
    /// them), then the 16-byte response written from registers (two stores).
    #[inline]
    fn serve_into(q: &Slot<'_, TestReq>, s: &mut SlotMut<'_, TestRsp>) -> bool {
        let id: u64 = q.get(offset_of!(TestReq, id));
        let csum: u32 = q.get(offset_of!(TestReq, csum));
        let last: u8 = q.get(offset_of!(TestReq, payload) + TEST_PAYLOAD - 1);
        s.write(TestRsp {
            id,
            csum: csum ^ u32::from(last),
            status: 0,
        });
        true
    }

    #[inline]
    fn check(s: &TestRsp, i: u64) -> bool {
        s.id == i
            && s.status == 0
            && s.csum == (i as u32).wrapping_mul(2_654_435_761) ^ u32::from(i as u8)
    }
}

/// blkif requests as blkfront sends them (`blkif_fill`, `blkif_serve`, `blkif_check` in C).
#[derive(Debug)]
pub struct BlkifWorkload;

const BLKIF_ID_XOR: u64 = 0x5a5a_5a5a_5a5a_5a5a;

fn blkif_op(i: u64) -> u8 {
    (if i & 1 == 1 {
        xen_sys::BLKIF_OP_WRITE
    } else {
        xen_sys::BLKIF_OP_READ
    }) as u8
}

fn blkif_nr_segments(i: u64) -> u8 {
    1 + (i % u64::from(xen_sys::BLKIF_MAX_SEGMENTS_PER_REQUEST)) as u8
}

impl Workload for BlkifWorkload {
    type Req = blkif_request;
    type Rsp = blkif_response;

    fn request(i: u64) -> blkif_request {
        let mut r = blkif_request {
            operation: blkif_op(i),
            nr_segments: blkif_nr_segments(i),
            handle: (i & 0xffff) as u16,
            id: i ^ BLKIF_ID_XOR,
            sector_number: i.wrapping_mul(8),
            ..Default::default()
        };
        for k in 0..usize::from(r.nr_segments) {
            r.seg[k].gref = i.wrapping_add(k as u64) as u32;
            r.seg[k].first_sect = 0;
            r.seg[k].last_sect = 7;
        }
        r
    }

    fn serve(q: &blkif_request) -> Option<blkif_response> {
        let i = q.id ^ BLKIF_ID_XOR;
        let nseg = usize::from(q.nr_segments);
        let ok = q.sector_number == i.wrapping_mul(8)
            && q.nr_segments == blkif_nr_segments(i)
            && q.operation == blkif_op(i)
            && q.seg.get(..nseg).is_some_and(|segs| {
                segs.iter()
                    .enumerate()
                    .all(|(k, s)| s.gref == i.wrapping_add(k as u64) as u32 && s.last_sect == 7)
            });
        ok.then_some(blkif_response {
            id: q.id,
            operation: q.operation,
            status: xen_sys::BLKIF_RSP_OKAY as i16,
        })
    }

    fn check(s: &blkif_response, i: u64) -> bool {
        s.id == i ^ BLKIF_ID_XOR
            && s.status == xen_sys::BLKIF_RSP_OKAY as i16
            && s.operation == blkif_op(i)
    }
}

/// An eventfd standing in for an event channel: [`ring`](Self::ring) is
/// `xenevtchn_notify`, [`wait`](Self::wait) a blocking `xenevtchn_pending`.
#[derive(Debug)]
pub struct Doorbell {
    fd: EventFd,
}

impl Doorbell {
    /// A new doorbell, not rung.
    pub fn new() -> io::Result<Doorbell> {
        let fd = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?;
        Ok(Doorbell { fd })
    }

    /// Rings the bell.
    pub fn ring(&self) -> io::Result<()> {
        self.fd.write(1)?;
        Ok(())
    }

    /// Waits until the bell was rung (since the last wait), at most `timeout`.
    pub fn wait(&self, timeout: Duration) -> io::Result<()> {
        let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
        loop {
            match poll(&mut fds, PollTimeout::from(ms)) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::TimedOut)),
                Ok(_) => break,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        match self.fd.read() {
            Ok(_) | Err(nix::errno::Errno::EAGAIN) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The eventfd (for the C peer).
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Counters of one driver run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Check-notify results that said to notify the peer.
    pub notifies: u64,
    /// Times the end went idle (slept on its doorbell, or spun once).
    pub waits: u64,
}

/// Why a driver run failed.
#[derive(Debug, thiserror::Error)]
pub enum DriveError {
    /// A ring operation failed.
    #[error("ring: {0}")]
    Ring(#[from] RingError),
    /// Entry number `0` failed its check.
    #[error("entry {0} failed its check")]
    Bad(u64),
    /// The doorbell failed or the peer was silent past the timeout.
    #[error("doorbell: {0}")]
    Bell(#[from] io::Error),
}

/// How an end waits for its peer: sleeping on doorbells, or spinning.
#[derive(Debug, Clone, Copy)]
pub enum Bells<'a> {
    /// Notify with `kick`, sleep on `wait`.
    EventFd {
        /// Rung when the check-notify macro says so.
        kick: &'a Doorbell,
        /// Slept on when idle.
        wait: &'a Doorbell,
    },
    /// Busy-poll; notifications are counted but not sent.
    Spin,
}

impl<'a> Bells<'a> {
    /// The front end's and the back end's bells: eventfds `to_back` and `to_front` when
    /// `eventfd`, spinning otherwise.
    pub fn pair(
        to_back: &'a Doorbell,
        to_front: &'a Doorbell,
        eventfd: bool,
    ) -> (Bells<'a>, Bells<'a>) {
        if !eventfd {
            return (Bells::Spin, Bells::Spin);
        }
        (
            Bells::EventFd {
                kick: to_back,
                wait: to_front,
            },
            Bells::EventFd {
                kick: to_front,
                wait: to_back,
            },
        )
    }

    fn kick(&self) -> io::Result<()> {
        match self {
            Bells::EventFd { kick, .. } => kick.ring(),
            Bells::Spin => Ok(()),
        }
    }

    fn fds(&self) -> (RawFd, RawFd) {
        match self {
            Bells::EventFd { kick, wait } => (kick.raw_fd(), wait.raw_fd()),
            Bells::Spin => (-1, -1),
        }
    }
}

/// How long an end has gone without progress, and how it waits meanwhile. The timeout
/// counts from the end's last progress: a peer silent that long fails the run, while an
/// exchange that keeps moving, however slowly (spinning ends on a loaded machine get the CPU
/// a few times a second), does not. Spinning yields the CPU every 64th idle round in a row
/// and reads the clock every 4096th, as the C peer does.
struct Idle {
    timeout: Duration,
    /// The driver's progress counter at the last wait.
    mark: u64,
    /// Idle rounds since `mark` last changed.
    rounds: u64,
    /// When the 4096th idle round in a row was seen (spinning only).
    since: Option<Instant>,
}

impl Idle {
    fn new(timeout: Duration) -> Idle {
        Idle {
            timeout,
            mark: 0,
            rounds: 0,
            since: None,
        }
    }

    /// Waits for the peer once; `mark` is the driver's progress counter (entries sent plus
    /// received), so a changed one restarts the count.
    fn wait(&mut self, bells: &Bells<'_>, mark: u64) -> io::Result<()> {
        if mark != self.mark {
            self.mark = mark;
            self.rounds = 0;
            self.since = None;
        }
        self.rounds += 1;
        match bells {
            Bells::EventFd { wait, .. } => wait.wait(self.timeout),
            Bells::Spin => {
                std::hint::spin_loop();
                if self.rounds % 64 == 0 {
                    std::thread::yield_now();
                    if self.rounds % 4096 == 0 {
                        let now = Instant::now();
                        if now.duration_since(*self.since.get_or_insert(now)) > self.timeout {
                            return Err(io::Error::from(io::ErrorKind::TimedOut));
                        }
                    }
                }
                Ok(())
            }
        }
    }
}

/// The front end's driver loop (as `xrt_*_front_run` in C): sends `n` requests of `W`,
/// checks every response in order.
pub fn run_front<W: Workload, M: SharedMemory>(
    ring: &mut FrontRing<M, W::Req, W::Rsp>,
    n: u64,
    bells: Bells<'_>,
    timeout: Duration,
) -> Result<Stats, DriveError> {
    let mut st = Stats::default();
    let (mut sent, mut recv) = (0u64, 0u64);
    let mut idle = Idle::new(timeout);
    while recv < n {
        let mut progressed = false;
        let mut queued = false;
        while sent < n && !ring.is_full() {
            W::fill(&mut ring.next_request()?, sent);
            sent += 1;
            queued = true;
        }
        if queued {
            if ring.push_requests_and_check_notify() {
                st.notifies += 1;
                bells.kick()?;
            }
            progressed = true;
        }
        // `rsp_prod` once per round, as the C loop reads `rp`; then the responses seen.
        for _ in 0..ring.unconsumed_responses()? {
            let Some(rsp) = ring.next_response()? else {
                break;
            };
            if !W::check(&rsp.read(), recv) {
                return Err(DriveError::Bad(recv));
            }
            recv += 1;
            progressed = true;
        }
        if progressed || recv == n {
            continue;
        }
        if ring.final_check_for_responses()? || (sent < n && !ring.is_full()) {
            continue;
        }
        st.waits += 1;
        idle.wait(&bells, sent + recv)?;
    }
    Ok(st)
}

/// The back end's driver loop (as `xrt_*_back_run` in C): serves `n` requests of `W`.
pub fn run_back<W: Workload, M: SharedMemory>(
    ring: &mut BackRing<M, W::Req, W::Rsp>,
    n: u64,
    bells: Bells<'_>,
    timeout: Duration,
) -> Result<Stats, DriveError> {
    let mut st = Stats::default();
    let mut done = 0u64;
    let mut idle = Idle::new(timeout);
    while done < n {
        let mut progressed = false;
        // `req_prod` once per round (checked), as the C loop reads `rp`; then the requests
        // seen (capped by the response slots, `RING_REQUEST_CONS_OVERFLOW`).
        for _ in 0..ring.unconsumed_requests()? {
            let Some(req) = ring.next_request()? else {
                break;
            };
            let rsp = W::serve_slot(&req).ok_or(DriveError::Bad(done))?;
            ring.push_response(rsp)?;
            done += 1;
            progressed = true;
        }
        if progressed {
            if ring.push_responses_and_check_notify() {
                st.notifies += 1;
                bells.kick()?;
            }
            continue;
        }
        if ring.final_check_for_requests()? {
            continue;
        }
        st.waits += 1;
        idle.wait(&bells, done)?;
    }
    Ok(st)
}

/// One thread, both ends (as `xrt_loopback`/`xrt_echo_loopback` in C): queue up to `batch`
/// requests, push, serve them, push the responses, consume them. Returns the number of good
/// responses.
pub fn loopback<W: Workload, M: SharedMemory + Clone>(
    mem: &M,
    n: u64,
    batch: u32,
) -> Result<u64, DriveError> {
    let mut front: FrontRing<M, W::Req, W::Rsp> = FrontRing::new(mem.clone(), xen_types::Pages(1))?;
    let mut back: BackRing<M, W::Req, W::Rsp> = BackRing::new(mem.clone(), xen_types::Pages(1))?;
    let (mut sent, mut good) = (0u64, 0u64);
    while good < n {
        let mut b = 0;
        while b < batch && sent < n && !front.is_full() {
            W::fill(&mut front.next_request()?, sent);
            sent += 1;
            b += 1;
        }
        front.push_requests_and_check_notify();
        for _ in 0..back.unconsumed_requests()? {
            let Some(q) = back.next_request()? else {
                break;
            };
            let rsp = W::serve_slot(&q).ok_or(DriveError::Bad(good))?;
            back.push_response(rsp)?;
        }
        back.push_responses_and_check_notify();
        back.final_check_for_requests()?;
        for _ in 0..front.unconsumed_responses()? {
            let Some(s) = front.next_response()? else {
                break;
            };
            if !W::check(&s.read(), good) {
                return Ok(good);
            }
            good += 1;
        }
        front.final_check_for_responses()?;
    }
    Ok(good)
}

/// [`run_front`] on the batch API ([`FrontRing::push_requests_with`],
/// [`FrontRing::take_responses_with`]): each round fills every free slot and publishes them
/// at once, then consumes every published response with one index read.
pub fn run_front_batched<W: Workload, M: SharedMemory>(
    ring: &mut FrontRing<M, W::Req, W::Rsp>,
    n: u64,
    bells: Bells<'_>,
    timeout: Duration,
) -> Result<Stats, DriveError> {
    let mut st = Stats::default();
    let (mut sent, mut recv) = (0u64, 0u64);
    let mut idle = Idle::new(timeout);
    while recv < n {
        let mut progressed = false;
        let want = u32::try_from(n - sent).unwrap_or(u32::MAX);
        if want > 0 && !ring.is_full() {
            let p = ring.push_requests_with(want, |slot, k| W::fill(slot, sent + u64::from(k)))?;
            sent += u64::from(p.count);
            if p.notify {
                st.notifies += 1;
                bells.kick()?;
            }
            progressed = true;
        }
        // A failed check only takes a branch: nothing carries from one check to the next.
        let mut bad = None;
        let got = ring.take_responses_with(u32::MAX, |rsp| {
            if !W::check(&rsp.read(), recv) {
                bad.get_or_insert(recv);
            }
            recv += 1;
        })?;
        if let Some(i) = bad {
            return Err(DriveError::Bad(i));
        }
        if got > 0 || progressed || recv == n {
            continue;
        }
        if ring.final_check_for_responses()? || (sent < n && !ring.is_full()) {
            continue;
        }
        st.waits += 1;
        idle.wait(&bells, sent + recv)?;
    }
    Ok(st)
}

/// [`run_back`] on the batch API ([`BackRing::serve_requests_with`]): each round serves every
/// published request with one index read and publishes the responses at once.
pub fn run_back_batched<W: Workload, M: SharedMemory>(
    ring: &mut BackRing<M, W::Req, W::Rsp>,
    n: u64,
    bells: Bells<'_>,
    timeout: Duration,
) -> Result<Stats, DriveError> {
    let mut st = Stats::default();
    let mut done = 0u64;
    let mut idle = Idle::new(timeout);
    while done < n {
        let (mut bad, mut i) = (None, done);
        let p = ring.serve_requests_with(u32::MAX, |q, s| {
            if !W::serve_into(q, s) {
                bad.get_or_insert(i);
            }
            i += 1;
        })?;
        if let Some(i) = bad {
            return Err(DriveError::Bad(i));
        }
        done += u64::from(p.count);
        if p.notify {
            st.notifies += 1;
            bells.kick()?;
        }
        if p.count > 0 {
            continue;
        }
        if ring.final_check_for_requests()? {
            continue;
        }
        st.waits += 1;
        idle.wait(&bells, done)?;
    }
    Ok(st)
}

/// [`loopback`] on the batch API: fill and publish up to `batch` requests, serve and publish
/// them, consume the responses, each step one call.
pub fn loopback_batched<W: Workload, M: SharedMemory + Clone>(
    mem: &M,
    n: u64,
    batch: u32,
) -> Result<u64, DriveError> {
    let mut front: FrontRing<M, W::Req, W::Rsp> = FrontRing::new(mem.clone(), xen_types::Pages(1))?;
    let mut back: BackRing<M, W::Req, W::Rsp> = BackRing::new(mem.clone(), xen_types::Pages(1))?;
    let (mut sent, mut good) = (0u64, 0u64);
    while good < n {
        let want = batch.min(u32::try_from(n - sent).unwrap_or(u32::MAX));
        let p = front.push_requests_with(want, |slot, k| W::fill(slot, sent + u64::from(k)))?;
        sent += u64::from(p.count);
        let (mut bad, mut i) = (None, good);
        back.serve_requests_with(u32::MAX, |q, s| {
            if !W::serve_into(q, s) {
                bad.get_or_insert(i);
            }
            i += 1;
        })?;
        if let Some(i) = bad {
            return Err(DriveError::Bad(i));
        }
        back.final_check_for_requests()?;
        // A failed check only takes a branch: nothing carries from one check to the next.
        let (mut bad, mut i) = (None, good);
        let got = front.take_responses_with(u32::MAX, |s| {
            if !W::check(&s.read(), i) {
                bad.get_or_insert(i);
            }
            i += 1;
        })?;
        if let Some(i) = bad {
            return Ok(i);
        }
        good += u64::from(got);
        front.final_check_for_responses()?;
    }
    Ok(good)
}

/// Ring kinds the C peer knows (`which` in `csrc/ring_ref.c`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum CKind {
    /// [`TestReq`]/[`TestRsp`].
    Test = 0,
    /// blkif.
    Blkif = 1,
    /// netif tx.
    NetifTx = 2,
    /// netif rx.
    NetifRx = 3,
    /// [`TestReq`]/[`TestRsp`] with the [`EchoWorkload`] (runners only).
    Echo = 4,
}

/// The C reference peer: `csrc/ring_ref.c`, built against Debian's `<xen/io/ring.h>`.
#[cfg(xen_ring_c_ref)]
pub mod cref {
    use std::time::Duration;

    use xen_types::mem::SharedMemory;

    use super::{Bells, CKind, Stats};

    #[repr(C)]
    #[derive(Default)]
    struct CStats {
        notifies: u64,
        waits: u64,
        err: i32,
        _pad: u32,
    }

    /// `struct xrt_layout`: what the C compiler laid out.
    #[repr(C)]
    #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
    pub struct CLayout {
        /// `sizeof(struct X_sring)`.
        pub sring_size: u64,
        /// `offsetof(struct X_sring, ring)`.
        pub ring_offset: u64,
        /// `sizeof(union X_sring_entry)`.
        pub entry_size: u64,
        /// Offsets of req_prod, req_event, rsp_prod, rsp_event, pvt.
        pub offsets: [u64; 5],
    }

    type Runner = unsafe extern "C" fn(*mut u8, usize, u64, i32, i32, i32, *mut CStats) -> i32;

    extern "C" {
        fn xrt_xrt_front_run(
            m: *mut u8,
            b: usize,
            n: u64,
            k: i32,
            w: i32,
            t: i32,
            s: *mut CStats,
        ) -> i32;
        fn xrt_xrt_back_run(
            m: *mut u8,
            b: usize,
            n: u64,
            k: i32,
            w: i32,
            t: i32,
            s: *mut CStats,
        ) -> i32;
        fn xrt_blkif_front_run(
            m: *mut u8,
            b: usize,
            n: u64,
            k: i32,
            w: i32,
            t: i32,
            s: *mut CStats,
        ) -> i32;
        fn xrt_blkif_back_run(
            m: *mut u8,
            b: usize,
            n: u64,
            k: i32,
            w: i32,
            t: i32,
            s: *mut CStats,
        ) -> i32;
        fn xrt_xecho_front_run(
            m: *mut u8,
            b: usize,
            n: u64,
            k: i32,
            w: i32,
            t: i32,
            s: *mut CStats,
        ) -> i32;
        fn xrt_xecho_back_run(
            m: *mut u8,
            b: usize,
            n: u64,
            k: i32,
            w: i32,
            t: i32,
            s: *mut CStats,
        ) -> i32;
        fn xrt_echo_loopback(mem: *mut u8, bytes: usize, n: u64, batch: u32) -> u64;
        fn xrt_shared_ring_init(mem: *mut u8);
        fn xrt_loopback(mem: *mut u8, bytes: usize, n: u64, batch: u32) -> u64;
        fn xrt_layout(which: i32, out: *mut CLayout) -> i32;
        fn xrt_ring_size(which: i32, mem: *mut u8, bytes: usize) -> i64;
        fn xrt_const_ring_size(which: i32, bytes: usize) -> i64;
        fn xrt_push_requests_check_notify(mem: *mut u8, bytes: usize, pvt: u32) -> i32;
        fn xrt_push_responses_check_notify(mem: *mut u8, bytes: usize, pvt: u32) -> i32;
        fn xrt_final_check_for_requests(mem: *mut u8, bytes: usize, cons: u32, pvt: u32) -> u32;
        fn xrt_final_check_for_responses(mem: *mut u8, bytes: usize, cons: u32) -> u32;
        fn xrt_predicates(
            size: u32,
            req_prod_pvt: u32,
            rsp_cons: u32,
            rsp_prod_pvt: u32,
            prod: u32,
            cons: u32,
            free: *mut u32,
        ) -> u32;
        fn xrt_checksum(id: u64, payload: *const u8, len: u32) -> u32;
    }

    /// A C driver loop failed: the `XRT_E*` code of `csrc/ring_ref.c`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
    pub enum CError {
        /// -1: an entry failed its check.
        #[error("C peer: an entry failed its check")]
        Bad,
        /// -2: the peer's producer index was impossible.
        #[error("C peer: impossible producer index")]
        Overflow,
        /// -3: no doorbell within the timeout.
        #[error("C peer: timed out")]
        TimedOut,
        /// -4 (or other): an eventfd call failed.
        #[error("C peer: I/O error ({0})")]
        Io(i32),
    }

    fn bytes_of<M: SharedMemory>(mem: &M, nr_pages: usize) -> usize {
        let bytes = nr_pages * xen_types::PAGE_SIZE;
        assert!(
            bytes <= mem.len(),
            "C peer given more pages than the memory holds"
        );
        bytes
    }

    fn run<M: SharedMemory>(
        f: Runner,
        mem: &M,
        nr_pages: usize,
        n: u64,
        bells: Bells<'_>,
        timeout: Duration,
    ) -> Result<Stats, CError> {
        let bytes = bytes_of(mem, nr_pages);
        let (kick, wait) = bells.fds();
        let mut st = CStats::default();
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: `mem` is valid for reads and writes of `bytes` (checked above) for the
        // call; the C code accesses only the ring inside it (the peer thread shares it, as
        // a Xen peer shares a granted page); the fds are open eventfds or -1; `st` is a
        // valid out-pointer.
        let r = unsafe { f(mem.as_ptr(), bytes, n, kick, wait, ms, &mut st) };
        match r {
            0 => Ok(Stats {
                notifies: st.notifies,
                waits: st.waits,
            }),
            -1 => Err(CError::Bad),
            -2 => Err(CError::Overflow),
            -3 => Err(CError::TimedOut),
            e => Err(CError::Io(e)),
        }
    }

    /// Runs the C front end (`xrt_{xrt,blkif,xecho}_front_run`) of `kind` (Test, Blkif or
    /// Echo; others run Test) on a shared ring already initialised: `n` requests, every
    /// response checked.
    pub fn front_run<M: SharedMemory>(
        kind: CKind,
        mem: &M,
        nr_pages: usize,
        n: u64,
        bells: Bells<'_>,
        timeout: Duration,
    ) -> Result<Stats, CError> {
        let f: Runner = match kind {
            CKind::Blkif => xrt_blkif_front_run,
            CKind::Echo => xrt_xecho_front_run,
            _ => xrt_xrt_front_run,
        };
        run(f, mem, nr_pages, n, bells, timeout)
    }

    /// Runs the C back end of `kind` (Test, Blkif or Echo): serves `n` requests.
    pub fn back_run<M: SharedMemory>(
        kind: CKind,
        mem: &M,
        nr_pages: usize,
        n: u64,
        bells: Bells<'_>,
        timeout: Duration,
    ) -> Result<Stats, CError> {
        let f: Runner = match kind {
            CKind::Blkif => xrt_blkif_back_run,
            CKind::Echo => xrt_xecho_back_run,
            _ => xrt_xrt_back_run,
        };
        run(f, mem, nr_pages, n, bells, timeout)
    }

    /// `SHARED_RING_INIT` in C.
    pub fn shared_ring_init<M: SharedMemory>(mem: &M) {
        bytes_of(mem, 1);
        // SAFETY: the first page of `mem` is valid for writes; only the 64-byte header is
        // written.
        unsafe { xrt_shared_ring_init(mem.as_ptr()) }
    }

    /// `xrt_loopback` (or `xrt_echo_loopback` for [`CKind::Echo`]): both ends in C in this
    /// thread; returns the good responses.
    pub fn loopback<M: SharedMemory>(kind: CKind, mem: &M, n: u64, batch: u32) -> u64 {
        let bytes = bytes_of(mem, 1);
        let f = match kind {
            CKind::Echo => xrt_echo_loopback,
            _ => xrt_loopback,
        };
        // SAFETY: one page of `mem`, valid for reads and writes, used only by this call.
        unsafe { f(mem.as_ptr(), bytes, n, batch) }
    }

    /// The C layout of `kind`.
    pub fn layout(kind: CKind) -> CLayout {
        let mut out = CLayout::default();
        // SAFETY: `out` is a valid out-pointer; every CKind is known to the C side.
        let r = unsafe { xrt_layout(kind as i32, &mut out) };
        assert_eq!(r, 0);
        out
    }

    /// `__RING_SIZE(s, bytes)` evaluated on a ring pointer at `mem`.
    pub fn ring_size<M: SharedMemory>(kind: CKind, mem: &M, bytes: usize) -> i64 {
        // SAFETY: the macro only does pointer arithmetic on `mem`, reads nothing.
        unsafe { xrt_ring_size(kind as i32, mem.as_ptr(), bytes) }
    }

    /// `__CONST_RING_SIZE(kind, bytes)`.
    pub fn const_ring_size(kind: CKind, bytes: usize) -> i64 {
        // SAFETY: pure arithmetic.
        unsafe { xrt_const_ring_size(kind as i32, bytes) }
    }

    /// `RING_PUSH_REQUESTS_AND_CHECK_NOTIFY` on the test ring in `mem` (one page) with
    /// `req_prod_pvt = pvt`.
    pub fn push_requests_check_notify<M: SharedMemory>(mem: &M, pvt: u32) -> bool {
        let bytes = bytes_of(mem, 1);
        // SAFETY: one page of `mem`, valid for reads and writes; this thread only.
        unsafe { xrt_push_requests_check_notify(mem.as_ptr(), bytes, pvt) != 0 }
    }

    /// `RING_PUSH_RESPONSES_AND_CHECK_NOTIFY` with `rsp_prod_pvt = pvt`.
    pub fn push_responses_check_notify<M: SharedMemory>(mem: &M, pvt: u32) -> bool {
        let bytes = bytes_of(mem, 1);
        // SAFETY: as above.
        unsafe { xrt_push_responses_check_notify(mem.as_ptr(), bytes, pvt) != 0 }
    }

    /// `RING_FINAL_CHECK_FOR_REQUESTS` with the given private indexes; the work count.
    pub fn final_check_for_requests<M: SharedMemory>(mem: &M, cons: u32, pvt: u32) -> u32 {
        let bytes = bytes_of(mem, 1);
        // SAFETY: as above.
        unsafe { xrt_final_check_for_requests(mem.as_ptr(), bytes, cons, pvt) }
    }

    /// `RING_FINAL_CHECK_FOR_RESPONSES` with `rsp_cons = cons`; the work count.
    pub fn final_check_for_responses<M: SharedMemory>(mem: &M, cons: u32) -> u32 {
        let bytes = bytes_of(mem, 1);
        // SAFETY: as above.
        unsafe { xrt_final_check_for_responses(mem.as_ptr(), bytes, cons) }
    }

    /// The predicates of `ring.h` on a ring of `size`: returns (`RING_FREE_REQUESTS`,
    /// `RING_FULL`, `RING_REQUEST_PROD_OVERFLOW(prod)`, `RING_REQUEST_CONS_OVERFLOW(cons)`,
    /// `RING_RESPONSE_PROD_OVERFLOW(prod)`).
    pub fn predicates(
        size: u32,
        req_prod_pvt: u32,
        rsp_cons: u32,
        rsp_prod_pvt: u32,
        prod: u32,
        cons: u32,
    ) -> (u32, bool, bool, bool, bool) {
        let mut free = 0;
        // SAFETY: pure arithmetic on a stack ring struct; `free` is a valid out-pointer.
        let bits = unsafe {
            xrt_predicates(
                size,
                req_prod_pvt,
                rsp_cons,
                rsp_prod_pvt,
                prod,
                cons,
                &mut free,
            )
        };
        (
            free,
            bits & 1 != 0,
            bits & 2 != 0,
            bits & 4 != 0,
            bits & 8 != 0,
        )
    }

    /// `xrt_checksum`.
    pub fn checksum(id: u64, payload: &[u8; super::TEST_PAYLOAD], len: u32) -> u32 {
        // SAFETY: `payload` is 48 readable bytes; C reads at most min(len, 48).
        unsafe { xrt_checksum(id, payload.as_ptr(), len) }
    }
}
