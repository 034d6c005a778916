//! A console's output on its way to the pty: io.c's `struct buffer`, with its bound.
//!
//! Everything the guest writes is appended (after going to the log); the pty takes it from
//! the front. With a limit (`console/limit`) and `--overflow-data=discard`, once more than
//! 5/4 of the limit is waiting, either the part already written is dropped (when more than
//! a quarter was), or the middle is discarded, keeping the first half-limit and the newest
//! bytes, exactly as io.c does. With `keep`, the daemon stops taking from the guest's ring
//! while the limit is reached ([`Buffer::available`]), so the guest waits instead.

/// Bytes waiting for the pty.
#[derive(Debug, Default)]
pub(crate) struct Buffer {
    data: Vec<u8>,
    consumed: usize,
    max_capacity: usize,
}

impl Buffer {
    /// Sets the limit (0: none).
    pub(crate) fn set_limit(&mut self, max: usize) {
        self.max_capacity = max;
    }

    /// Bytes held (written or not).
    pub(crate) fn len(&self) -> usize {
        self.data.len()
    }

    /// True when nothing waits for the pty.
    pub(crate) fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// io.c's `buffer_available`: may more be taken from the guest's ring?
    pub(crate) fn available(&self, discard: bool) -> bool {
        discard || self.max_capacity == 0 || self.data.len() < self.max_capacity
    }

    /// Appends what was read from the ring, then applies the discard rule.
    pub(crate) fn append(&mut self, bytes: &[u8], discard: bool) {
        self.data.extend_from_slice(bytes);
        let max = self.max_capacity;
        if discard && max != 0 && self.data.len() > 5 * max / 4 {
            if self.consumed > max / 4 {
                // Move the unwritten data to the front.
                self.data.drain(..self.consumed);
                self.consumed = 0;
            } else {
                // Discard the middle: keep the first max/2 bytes and what came past max.
                let size = self.data.len();
                let over = size - max;
                self.data.copy_within(max..size, max / 2);
                self.data.truncate(max / 2 + over);
            }
        }
    }

    /// What waits for the pty.
    pub(crate) fn pending(&self) -> &[u8] {
        &self.data[self.consumed..]
    }

    /// `len` bytes were written to the pty.
    pub(crate) fn advance(&mut self, len: usize) {
        self.consumed += len;
        if self.consumed >= self.data.len() {
            self.consumed = 0;
            self.data.clear();
            if self.max_capacity != 0 && self.data.capacity() > self.max_capacity {
                self.data.shrink_to(self.max_capacity);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_middle_is_discarded_past_five_quarters_of_the_limit() {
        let mut b = Buffer::default();
        b.set_limit(100);
        let data: Vec<u8> = (0..125).collect();
        b.append(&data, true);
        assert_eq!(b.len(), 125, "up to 5/4 of the limit, nothing is discarded");
        assert_eq!(b.pending(), &data[..]);
        b.append(&[200], true);
        // 126 > 125: keep 0..50, then the 26 bytes past 100.
        let mut want: Vec<u8> = (0..50).collect();
        want.extend(100..125);
        want.push(200);
        assert_eq!(b.pending(), &want[..]);
    }

    #[test]
    fn written_data_is_dropped_first() {
        let mut b = Buffer::default();
        b.set_limit(100);
        b.append(&[1; 100], true);
        b.advance(60);
        b.append(&[2; 30], true);
        assert_eq!(
            b.len(),
            70,
            "the 60 bytes written went, nothing was discarded"
        );
        assert_eq!(b.pending()[..40], [1; 40]);
        b.advance(70);
        assert!(b.is_empty());
    }

    #[test]
    fn keep_mode_stops_taking_at_the_limit() {
        let mut b = Buffer::default();
        b.set_limit(10);
        b.append(&[0; 50], false);
        assert_eq!(b.len(), 50, "nothing discarded");
        assert!(!b.available(false));
        assert!(b.available(true));
        b.set_limit(0);
        assert!(b.available(false));
    }
}
