//! The decoders of guest-written descriptors on arbitrary bytes: VT-d page group responses (both
//! private-data modes) and wait descriptors, SMMUv3 commands, AMD commands (COMPLETE_PPR_REQUEST,
//! COMPLETION_WAIT, the rest), virtio-iommu PAGE_RESP requests. None may panic; a refusal is an
//! error value; whatever decodes re-encodes to something that decodes to the same thing (the
//! encoders are the guest drivers' and the tests', so a decoder that accepted what its encoder
//! cannot say would show here).
#![no_main]

use iopf_viommu::amd::command::{Command as AmdCommand, CompletionWait, PprCompletion};
use iopf_viommu::smmuv3::Command as SmmuCommand;
use iopf_viommu::virtio_iommu::PageRespRequest;
use iopf_viommu::vtd::{PageGroupResponse, WaitDescriptor};
use iopf_viommu::PrivateDataMode;
use libfuzzer_sys::fuzz_target;

fn qwords<const N: usize>(b: &[u8]) -> [u64; N] {
    let mut out = [0u64; N];
    for (w, c) in out.iter_mut().zip(b.chunks(8)) {
        let mut v = [0u8; 8];
        v[..c.len()].copy_from_slice(c);
        *w = u64::from_le_bytes(v);
    }
    out
}

fn dwords(b: &[u8]) -> [u32; 4] {
    let mut out = [0u32; 4];
    for (w, c) in out.iter_mut().zip(b.chunks(4)) {
        let mut v = [0u8; 4];
        v[..c.len()].copy_from_slice(c);
        *w = u32::from_le_bytes(v);
    }
    out
}

fuzz_target!(|data: &[u8]| {
    // Every decoder sees the same bytes (zero-padded), so one input exercises all of them.
    let mut buf = [0u8; 64];
    let n = data.len().min(64);
    buf[..n].copy_from_slice(&data[..n]);
    // Most inputs would never pass the type checks: let the first byte pick a type to force.
    let force = data.first().copied().unwrap_or(0);

    // VT-d: type in qw0[3:0] (and [11:9]); 0x9 = page group response, 0x5 = wait.
    let mut qw: [u64; 4] = qwords(&buf[..32]);
    if force & 1 != 0 {
        qw[0] = (qw[0] & !0xe0f) | 0x9;
    }
    for mode in [PrivateDataMode::None, PrivateDataMode::Carried] {
        if let Ok(r) = PageGroupResponse::decode(&qw, mode) {
            let again = PageGroupResponse::decode(&r.encode(mode), mode);
            assert_eq!(again, Ok(r), "VT-d page group response round trip ({mode:?})");
        }
    }
    let mut wq = qw;
    if force & 2 != 0 {
        wq[0] = (wq[0] & !0xe0f) | 0x5;
    }
    if let Ok(w) = WaitDescriptor::decode(&wq) {
        assert_eq!(WaitDescriptor::decode(&w.encode()), Ok(w), "VT-d wait round trip");
    }

    // SMMUv3: 16-byte commands, opcode in byte 0.
    let mut sb = [0u8; 16];
    sb.copy_from_slice(&buf[..16]);
    if force & 4 != 0 {
        sb[0] = [0x41, 0x44, 0x45, 0x46][usize::from(force >> 6)];
    }
    let sq: [u64; 2] = qwords(&sb);
    let s1 = SmmuCommand::decode(&sq);
    assert_eq!(s1, SmmuCommand::from_bytes(&sb), "SMMUv3 decode and from_bytes agree");
    if let Ok(c) = s1 {
        assert_eq!(SmmuCommand::decode(&c.encode()), Ok(c), "SMMUv3 command round trip");
        assert_eq!(SmmuCommand::from_bytes(&c.to_bytes()), Ok(c));
    }

    // AMD: 16-byte commands, opcode in data[1][31:28].
    let mut d = dwords(&buf[16..32]);
    if force & 8 != 0 {
        d[1] = (d[1] & 0x0fff_ffff) | ((if force & 16 != 0 { 7u32 } else { 1 }) << 28);
    }
    let _ = AmdCommand::decode(&d);
    if let Ok(p) = PprCompletion::decode(&d) {
        assert_eq!(PprCompletion::decode(&p.encode()), Ok(p), "AMD COMPLETE_PPR round trip");
        assert_eq!(AmdCommand::decode(&d), Ok(AmdCommand::CompletePpr(p)));
    }
    if let Ok(w) = CompletionWait::decode(&d) {
        assert_eq!(CompletionWait::decode(&w.encode()), Ok(w), "AMD COMPLETION_WAIT round trip");
    }

    // virtio-iommu: PAGE_RESP request bytes (type 4 forced when asked).
    let mut vb = buf;
    if force & 32 != 0 {
        vb[0] = 0x08;
    }
    match PageRespRequest::from_bytes(&vb[..n.max(1).min(64)]) {
        Ok(r) => {
            let _ = r.decode();
            assert_eq!(PageRespRequest::from_bytes(&r.to_bytes()), Ok(r));
        }
        Err(_) => assert!(n.max(1) < 36, "a full-length PAGE_RESP request is always read"),
    }
});
