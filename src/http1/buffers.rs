//! Read buffers lent per thread to the server loop: a client connection
//! holds one only while bytes are coming in or waiting to be used, so that
//! an idle keep-alive connection holds none (nginx frees its buffers on
//! idle connections the same way). The upstream client reads a response's
//! first bytes onto the stack instead (`upstream::http1`).
//!
//! Each worker thread keeps a few spares; under load they go round at once,
//! and a quiet thread holds their memory for nobody.

use std::cell::RefCell;

use bytes::BytesMut;

/// A buffer's room for one read.
pub(crate) const SIZE: usize = 8 << 10;
/// Spares a thread keeps.
const KEPT: usize = 16;

thread_local! {
    static SPARES: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// A buffer with room for a read of [`SIZE`].
pub(crate) fn take() -> BytesMut {
    let mut buffer = SPARES.with_borrow_mut(Vec::pop).unwrap_or_default();
    buffer.reserve(SIZE);
    buffer
}

/// Gives a buffer back, emptied, unless it has grown large.
pub(crate) fn give(mut buffer: BytesMut) {
    buffer.clear();
    if (1..=2 * SIZE).contains(&buffer.capacity()) {
        SPARES.with_borrow_mut(|spares| {
            if spares.len() < KEPT {
                spares.push(buffer);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_go_round_and_large_ones_are_let_go() {
        let buffer = take();
        assert!(buffer.capacity() >= SIZE);
        let address = buffer.as_ptr();
        give(buffer);
        assert_eq!(take().as_ptr(), address, "the spare came back");
        let spares = || SPARES.with_borrow(Vec::len);
        let before = spares();
        let mut large = take();
        large.reserve(4 * SIZE);
        give(large);
        assert_eq!(
            spares(),
            before.saturating_sub(1),
            "a grown buffer is not kept"
        );
    }
}
