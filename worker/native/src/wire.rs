//! The data-plane wire format, byte for byte the one of `tunnelpy/worker/wire.py`
//! (ALPN `tunnel-py/data`). That module is the reference; this is its twin for the bytes
//! that never reach Python.
//!
//! * Each bi-stream starts with `[VERSION, kind]` (written/checked by the Python side).
//! * UDP datagrams: `flow_id:u32 BE | payload` as QUIC datagrams; too large for the current
//!   datagram size: `flow_id:u32 BE | len:u16 BE | payload` on the one `UDP_FRAMES` stream.

use bytes::{Buf, BufMut, Bytes, BytesMut};

pub const VERSION: u8 = 1;
pub const ALPN: &[u8] = b"tunnel-py/data";
pub const KIND_TCP: u8 = 1;
pub const KIND_UDP_FRAMES: u8 = 2;
pub const MAX_UDP_PAYLOAD: usize = 65535;
pub const FLOW_HEADER: usize = 4;
pub const FRAME_HEADER: usize = 6;

pub fn stream_header(kind: u8) -> [u8; 2] {
    [VERSION, kind]
}

pub fn encode_datagram(flow_id: u32, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(FLOW_HEADER + payload.len());
    out.put_u32(flow_id);
    out.put_slice(payload);
    out.freeze()
}

/// `None` if shorter than its flow header.
pub fn decode_datagram(mut data: Bytes) -> Option<(u32, Bytes)> {
    if data.len() < FLOW_HEADER {
        return None;
    }
    let flow_id = data.get_u32();
    Some((flow_id, data))
}

/// `None` if the payload exceeds [`MAX_UDP_PAYLOAD`].
pub fn encode_frame(flow_id: u32, payload: &[u8]) -> Option<Bytes> {
    let len = u16::try_from(payload.len()).ok()?;
    let mut out = BytesMut::with_capacity(FRAME_HEADER + payload.len());
    out.put_u32(flow_id);
    out.put_u16(len);
    out.put_slice(payload);
    Some(out.freeze())
}

/// Incremental decoder of `UDP_FRAMES` stream bytes.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: BytesMut,
}

impl FrameDecoder {
    pub fn feed(&mut self, data: &[u8]) -> Vec<(u32, Bytes)> {
        self.buf.extend_from_slice(data);
        let mut out = Vec::new();
        while self.buf.len() >= FRAME_HEADER {
            let flow_id = u32::from_be_bytes(self.buf[..4].try_into().expect("4 bytes"));
            let len = u16::from_be_bytes(self.buf[4..6].try_into().expect("2 bytes")) as usize;
            if self.buf.len() < FRAME_HEADER + len {
                break;
            }
            self.buf.advance(FRAME_HEADER);
            out.push((flow_id, self.buf.split_to(len).freeze()));
        }
        out
    }

    /// Bytes of an incomplete frame (non-zero at end of stream means truncation).
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagram_layout_matches_python() {
        // wire.encode_datagram(0x01020304, b"hi") == b"\x01\x02\x03\x04hi"
        let d = encode_datagram(0x0102_0304, b"hi");
        assert_eq!(&d[..], b"\x01\x02\x03\x04hi");
        assert_eq!(
            decode_datagram(d),
            Some((0x0102_0304, Bytes::from_static(b"hi")))
        );
        assert_eq!(decode_datagram(Bytes::from_static(b"\x00\x01")), None);
    }

    #[test]
    fn frame_layout_matches_python() {
        // wire.encode_frame(7, b"abc") == b"\x00\x00\x00\x07\x00\x03abc"
        let f = encode_frame(7, b"abc").unwrap();
        assert_eq!(&f[..], b"\x00\x00\x00\x07\x00\x03abc");
        assert!(encode_frame(1, &vec![0; MAX_UDP_PAYLOAD + 1]).is_none());
        assert_eq!(stream_header(KIND_UDP_FRAMES), [1, 2]);
    }

    #[test]
    fn decoder_handles_split_and_joined_frames() {
        let mut wire = Vec::new();
        wire.extend_from_slice(&encode_frame(1, b"one").unwrap());
        wire.extend_from_slice(&encode_frame(2, &[9u8; 3000]).unwrap());
        wire.extend_from_slice(&encode_frame(3, b"").unwrap());
        let mut dec = FrameDecoder::default();
        let mut got = Vec::new();
        for piece in wire.chunks(5) {
            got.extend(dec.feed(piece));
        }
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], (1, Bytes::from_static(b"one")));
        assert_eq!(got[1].1.len(), 3000);
        assert_eq!(got[2], (3, Bytes::new()));
        assert_eq!(dec.pending(), 0);
        dec.feed(&[0, 0, 0, 4, 0, 9, 1]);
        assert_eq!(dec.pending(), 7);
    }
}
