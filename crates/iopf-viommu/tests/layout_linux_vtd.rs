//! The VT-d descriptors and registers of `iopf_viommu::vtd` are bit-identical to Linux's.
//!
//! The test copies Linux 6.12's own definitions out of Debian's `linux-source-6.12` tarball at
//! test time (`drivers/iommu/intel/prq.c` and `drivers/iommu/intel/iommu.h`, extracted once and
//! cached under the cargo target dir): `struct page_req_dsc`, `struct qi_desc`, the `QI_DONE`
//! enum, every `QI_PGRP_*`, `QI_IWD_*` and `QI_RESP_*` macro, the register offsets and bits and
//! the `ecap_*` accessors, and the statements with which `intel_iommu_page_response()`,
//! `handle_bad_prq_event()` and `intel_iommu_drain_pasid_prq()` build their descriptors. A C
//! program built from that text, with gcc:
//!
//! 1. fills `struct page_req_dsc` through its bit-fields (one field at a time, then many
//!    pseudo-random value sets) and prints its four quadwords;
//! 2. builds page group responses with Linux's own statements;
//! 3. builds invalidation wait descriptors as `qi_submit_sync()` and the PRQ drain do;
//! 4. prints the register offsets and bits, and finds each `ecap_*` accessor's bit by trying
//!    every bit;
//! 5. does 1 and 2 again with the pre-VT-d-4.0 private-data layout, which Linux 6.10 removed:
//!    the Linux 6.1 definitions are embedded verbatim.
//!
//! The Rust side must encode the same fields to the same words (`VtdPageRequest::encode`,
//! `PageGroupResponse::encode`, `WaitDescriptor::encode`), decode Linux's words back to the same
//! fields (`decode`), and have the same register constants (`vtd::regs`). So the layouts are
//! proved against the kernel's text, not against a transcription of it.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use iopf_abi::{Perm, ResponseCode};
use iopf_viommu::vtd::inv_descriptor::{PAGE_GROUP_RESPONSE_TYPE, WAIT_TYPE};
use iopf_viommu::vtd::page_request::DESCRIPTOR_BYTES;
use iopf_viommu::vtd::{regs, PageGroupResponse, VtdPageRequest, WaitDescriptor};
use iopf_viommu::PrivateDataMode;

mod linux_source;

const PRQ_C: &str = "drivers/iommu/intel/prq.c";
const IOMMU_H: &str = "drivers/iommu/intel/iommu.h";

/// `enum { QI_FREE, QI_IN_USE, QI_DONE, QI_ABORT }` in iommu.h (the C program checks it).
const QI_DONE: u32 = 2;

/// Where the test caches prq.c and iommu.h, and its C program's name.
const CACHE: &str = "linux-source-6.12-vtd";
const C_PROGRAM: &str = "layout_linux_vtd";

/// A definition `start ... };` (a struct or an enum), with its semicolon.
fn definition(src: &str, start: &str, file: &str) -> String {
    assert!(src.contains(start), "`{start}` not found in {file}");
    let body = linux_source::braced(src, start);
    let begin = body.as_ptr() as usize - src.as_ptr() as usize;
    let rest = &src[begin + body.len()..];
    assert!(
        rest.starts_with(';'),
        "`{start}` in {file} is not followed by `;`"
    );
    format!("{body};")
}

/// The statement starting with `start` inside the body of the function `function`.
fn statement(src: &str, function: &str, start: &str, file: &str) -> String {
    assert!(src.contains(function), "`{function}` not found in {file}");
    let body = linux_source::braced(src, function);
    let at = body
        .find(start)
        .unwrap_or_else(|| panic!("`{start}` not in `{function}` of {file}"));
    let end = body[at..]
        .find(';')
        .unwrap_or_else(|| panic!("`{start}` in {file} has no `;`"));
    body[at..=at + end].to_string()
}

/// The macros the C program needs, copied line by line from iommu.h.
fn iommu_h_defines(iommu_h: &str) -> String {
    const PREFIXES: [&str; 3] = ["QI_PGRP_", "QI_IWD_", "QI_RESP_"];
    const NAMES: &[&str] = &[
        "DMAR_VER_REG",
        "DMAR_CAP_REG",
        "DMAR_ECAP_REG",
        "DMAR_GCMD_REG",
        "DMAR_GSTS_REG",
        "DMAR_FSTS_REG",
        "DMAR_FECTL_REG",
        "DMAR_IQH_REG",
        "DMAR_IQT_REG",
        "DMAR_IQA_REG",
        "DMAR_ICS_REG",
        "DMAR_IQER_REG",
        "DMAR_PQH_REG",
        "DMAR_PQT_REG",
        "DMAR_PQA_REG",
        "DMAR_PRS_REG",
        "DMAR_PECTL_REG",
        "DMAR_PEDATA_REG",
        "DMAR_PEADDR_REG",
        "DMAR_PEUADDR_REG",
        "DMA_PRS_PPR",
        "DMA_PRS_PRO",
        "DMA_FSTS_IQE",
        "DMA_GCMD_QIE",
        "DMA_GSTS_QIES",
        "ecap_qis",
        "ecap_dev_iotlb_support",
        "ecap_prs",
        "ecap_pasid",
        "ecap_pss",
        "ecap_pds",
        "ecap_smts",
    ];
    const PREFIXED: &[&str] = &[
        "QI_PGRP_PASID_P",
        "QI_PGRP_RESP_CODE",
        "QI_PGRP_DID",
        "QI_PGRP_PASID",
        "QI_PGRP_LPIG",
        "QI_PGRP_IDX",
        "QI_PGRP_RESP_TYPE",
        "QI_IWD_TYPE",
        "QI_IWD_STATUS_DATA",
        "QI_IWD_STATUS_WRITE",
        "QI_IWD_FENCE",
        "QI_IWD_PRQ_DRAIN",
        "QI_RESP_SUCCESS",
        "QI_RESP_INVALID",
        "QI_RESP_FAILURE",
    ];
    let mut out = String::new();
    let mut found = Vec::new();
    let mut lines = iommu_h.lines();
    while let Some(line) = lines.next() {
        let Some(rest) = line.trim_start().strip_prefix("#define") else {
            continue;
        };
        let rest = rest.trim_start();
        let name_len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let name = &rest[..name_len];
        if !(NAMES.contains(&name) || PREFIXES.iter().any(|p| name.starts_with(p))) {
            continue;
        }
        found.push(name.to_string());
        out.push_str(line);
        out.push('\n');
        let mut last = line;
        while last.trim_end().ends_with('\\') {
            last = lines
                .next()
                .unwrap_or_else(|| panic!("{IOMMU_H}: `{name}` continues past the end"));
            out.push_str(last);
            out.push('\n');
        }
    }
    let missing: Vec<&&str> = NAMES
        .iter()
        .chain(PREFIXED)
        .filter(|n| !found.iter().any(|f| f == **n))
        .collect();
    assert!(missing.is_empty(), "{IOMMU_H} does not define {missing:?}");
    out
}

/// The C program, with `@...@` placeholders for Linux's text and the generated calls.
const C_TEMPLATE: &str = r#"
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;
#define BIT(n) (1UL << (n))
#define BIT_ULL(n) (1ULL << (n))

/* ---- Linux 6.12 drivers/iommu/intel/iommu.h, copied at test time ---- */
@DEFINES@
@QI_ENUM@
@QI_DESC@

/* ---- Linux 6.12 drivers/iommu/intel/prq.c, copied at test time ---- */
@PAGE_REQ_DSC@

/*
 * ---- Linux v6.1, before VT-d 4.0 removed private data (Linux 6.10, "iommu/vt-d: Remove
 * private data use in fault message"). Verbatim from v6.1 drivers/iommu/intel/svm.c (as in the
 * 6.1-series tree chainonyourdoor/LuminaireKernel-6.1 at a3cb2c7620a3d2f57604cd04394a2726a0ba398a),
 * renamed by the preprocessor so it can live beside 6.12's: ----
 */
#define page_req_dsc page_req_dsc_v61
/* Page request queue descriptor */
struct page_req_dsc {
	union {
		struct {
			u64 type:8;
			u64 pasid_present:1;
			u64 priv_data_present:1;
			u64 rsvd:6;
			u64 rid:16;
			u64 pasid:20;
			u64 exe_req:1;
			u64 pm_req:1;
			u64 rsvd2:10;
		};
		u64 qw_0;
	};
	union {
		struct {
			u64 rd_req:1;
			u64 wr_req:1;
			u64 lpig:1;
			u64 prg_index:9;
			u64 addr:52;
		};
		u64 qw_1;
	};
	u64 priv_data[2];
};
#undef page_req_dsc
/* Linux v6.1 drivers/iommu/intel/iommu.h, verbatim: */
#define QI_PGRP_PDP(p)		(((u64)(p)) << 5)

/* The members of the kernel's fault and response records the code below reads. */
struct iommu_fault_page_request {
	u32 flags;
	u32 pasid;
	u32 grpid;
	u32 perm;
	u64 addr;
	u64 private_data[2];
};
struct iommu_page_response {
	u32 argsz;
	u32 version;
	u32 pasid;
	u32 grpid;
	u32 code;
};

static void put(const char *what, int i, u64 a, u64 b, u64 c, u64 d)
{
	printf("%s %d\t%llx %llx %llx %llx\n", what, i, a, b, c, d);
}

/* Linux 6.12 intel_iommu_page_response() (prq.c), its statements copied at test time. */
static struct qi_desc page_response_612(u16 sid, bool pasid_present, bool last_page,
					const struct iommu_fault_page_request *prm,
					const struct iommu_page_response *msg)
{
	struct qi_desc desc;

	@RESP612_QW0@
	@RESP612_QW1@
	desc.qw2 = 0;
	desc.qw3 = 0;
	return desc;
}

/* Linux 6.12 handle_bad_prq_event() (prq.c), its statements copied at test time. */
static struct qi_desc bad_prq_response_612(struct page_req_dsc *req, int result)
{
	struct qi_desc desc = { };

	@BAD612_QW0@
	@BAD612_QW1@
	return desc;
}

/* Linux v6.1 intel_svm_page_response() (svm.c), verbatim but for the latency branch. */
static struct qi_desc page_response_61(u16 sid, bool pasid_present, bool private_present,
				       bool last_page,
				       const struct iommu_fault_page_request *prm,
				       const struct iommu_page_response *msg)
{
		struct qi_desc desc;

		desc.qw0 = QI_PGRP_PASID(prm->pasid) | QI_PGRP_DID(sid) |
				QI_PGRP_PASID_P(pasid_present) |
				QI_PGRP_PDP(private_present) |
				QI_PGRP_RESP_CODE(msg->code) |
				QI_PGRP_RESP_TYPE;
		desc.qw1 = QI_PGRP_IDX(prm->grpid) | QI_PGRP_LPIG(last_page);
		desc.qw2 = 0;
		desc.qw3 = 0;

		if (private_present) {
			desc.qw2 = prm->private_data[0];
			desc.qw3 = prm->private_data[1];
		}
		return desc;
}

/* Linux v6.1 handle_bad_prq_event() (svm.c), verbatim from the PDP/LPIG test on. */
static int bad_prq_response_61(struct page_req_dsc_v61 *req, int result, struct qi_desc *out)
{
	struct qi_desc desc;

	if (!req->lpig && !req->priv_data_present)
		return 0;

	desc.qw0 = QI_PGRP_PASID(req->pasid) |
			QI_PGRP_DID(req->rid) |
			QI_PGRP_PASID_P(req->pasid_present) |
			QI_PGRP_PDP(req->priv_data_present) |
			QI_PGRP_RESP_CODE(result) |
			QI_PGRP_RESP_TYPE;
	desc.qw1 = QI_PGRP_IDX(req->prg_index) |
			QI_PGRP_LPIG(req->lpig);

	if (req->priv_data_present) {
		desc.qw2 = req->priv_data[0];
		desc.qw3 = req->priv_data[1];
	} else {
		desc.qw2 = 0;
		desc.qw3 = 0;
	}
	*out = desc;
	return 1;
}

/* A page request as the hardware writes it, through 6.12's bit-fields. */
static void req612(int i, u64 pasid_present, u64 rid, u64 pasid, u64 exe_req, u64 pm_req,
		   u64 rd_req, u64 wr_req, u64 lpig, u64 prg_index, u64 addr)
{
	struct page_req_dsc d;
	struct qi_desc r;

	memset(&d, 0, sizeof(d));
	d.type = 1;
	d.pasid_present = pasid_present;
	d.rid = rid;
	d.pasid = pasid;
	d.exe_req = exe_req;
	d.pm_req = pm_req;
	d.rd_req = rd_req;
	d.wr_req = wr_req;
	d.lpig = lpig;
	d.prg_index = prg_index;
	d.addr = addr;
	put("req612", i, d.qw_0, d.qw_1, d.qw_2, d.qw_3);
	if (d.lpig) {
		r = bad_prq_response_612(&d, QI_RESP_INVALID);
		put("bad612", i, r.qw0, r.qw1, r.qw2, r.qw3);
	}
}

/* The same through 6.1's bit-fields, with private data. */
static void req61(int i, u64 pasid_present, u64 rid, u64 pasid, u64 exe_req, u64 pm_req,
		  u64 rd_req, u64 wr_req, u64 lpig, u64 prg_index, u64 addr,
		  u64 priv_data_present, u64 pd0, u64 pd1)
{
	struct page_req_dsc_v61 d;
	struct qi_desc r;

	memset(&d, 0, sizeof(d));
	d.type = 1;
	d.pasid_present = pasid_present;
	d.priv_data_present = priv_data_present;
	d.rid = rid;
	d.pasid = pasid;
	d.exe_req = exe_req;
	d.pm_req = pm_req;
	d.rd_req = rd_req;
	d.wr_req = wr_req;
	d.lpig = lpig;
	d.prg_index = prg_index;
	d.addr = addr;
	d.priv_data[0] = pd0;
	d.priv_data[1] = pd1;
	put("req61", i, d.qw_0, d.qw_1, d.priv_data[0], d.priv_data[1]);
	if (bad_prq_response_61(&d, QI_RESP_INVALID, &r))
		put("bad61", i, r.qw0, r.qw1, r.qw2, r.qw3);
}

static void resp612(const char *what, int i, u16 sid, bool pasid_present, u32 pasid,
		    u32 grpid, bool last_page, u32 code)
{
	struct iommu_fault_page_request prm = { .pasid = pasid, .grpid = grpid };
	struct iommu_page_response msg = { .code = code };
	struct qi_desc r = page_response_612(sid, pasid_present, last_page, &prm, &msg);

	put(what, i, r.qw0, r.qw1, r.qw2, r.qw3);
}

static void resp61(int i, u16 sid, bool pasid_present, u32 pasid, u32 grpid, bool last_page,
		   u32 code, bool private_present, u64 pd0, u64 pd1)
{
	struct iommu_fault_page_request prm = {
		.pasid = pasid, .grpid = grpid, .private_data = { pd0, pd1 } };
	struct iommu_page_response msg = { .code = code };
	struct qi_desc r = page_response_61(sid, pasid_present, private_present, last_page,
					    &prm, &msg);

	put("resp61", i, r.qw0, r.qw1, r.qw2, r.qw3);
}

/* Wait descriptors with each flag Linux has a macro for. */
static void wait_dsc(int i, u32 d, u64 addr, bool sw, bool fn, bool pd)
{
	struct qi_desc w = { };

	w.qw0 = QI_IWD_STATUS_DATA(d) | QI_IWD_TYPE;
	if (sw)
		w.qw0 |= QI_IWD_STATUS_WRITE;
	if (fn)
		w.qw0 |= QI_IWD_FENCE;
	if (pd)
		w.qw0 |= QI_IWD_PRQ_DRAIN;
	w.qw1 = addr;
	put("wait", i, w.qw0, w.qw1, w.qw2, w.qw3);
}

/*
 * The wait descriptor qi_submit_sync() appends (Linux 6.12 drivers/iommu/intel/dmar.c, not
 * extracted: mirrored here), with QI_OPT_WAIT_DRAIN or without.
 */
static void submit_sync_wait(int i, u64 status_addr, bool drain)
{
	struct qi_desc wait_desc;

	wait_desc.qw0 = QI_IWD_STATUS_DATA(QI_DONE) |
			QI_IWD_STATUS_WRITE | QI_IWD_TYPE;
	if (drain)
		wait_desc.qw0 |= QI_IWD_PRQ_DRAIN;
	wait_desc.qw1 = status_addr;
	wait_desc.qw2 = 0;
	wait_desc.qw3 = 0;
	put("submit_sync_wait", i, wait_desc.qw0, wait_desc.qw1, wait_desc.qw2, wait_desc.qw3);
}

/* The fence-only wait of intel_iommu_drain_pasid_prq() (prq.c), copied at test time. */
static void drain_wait(void)
{
	struct qi_desc desc[3];

	memset(desc, 0, sizeof(desc));
	@DRAIN_QW0@
	put("drain_wait", 0, desc[0].qw0, desc[0].qw1, desc[0].qw2, desc[0].qw3);
}

#define V(name, v) printf("%s\t%llx\n", name, (u64)(v))
/* The ECAP bits an accessor reads, found by trying each bit. */
#define ECAP_MASK(m) ({ u64 mask_ = 0; \
	for (int b_ = 0; b_ < 64; b_++) if (m(1ULL << b_)) mask_ |= 1ULL << b_; mask_; })

int main(void)
{
	V("sizeof page_req_dsc", sizeof(struct page_req_dsc));
	V("sizeof page_req_dsc_v61", sizeof(struct page_req_dsc_v61));
	V("sizeof qi_desc", sizeof(struct qi_desc));
	V("const QI_DONE", QI_DONE);
	V("const QI_PGRP_RESP_TYPE", QI_PGRP_RESP_TYPE);
	V("const QI_IWD_TYPE", QI_IWD_TYPE);
	V("const QI_RESP_SUCCESS", QI_RESP_SUCCESS);
	V("const QI_RESP_INVALID", QI_RESP_INVALID);
	V("const QI_RESP_FAILURE", QI_RESP_FAILURE);
	V("reg VER", DMAR_VER_REG);
	V("reg CAP", DMAR_CAP_REG);
	V("reg ECAP", DMAR_ECAP_REG);
	V("reg GCMD", DMAR_GCMD_REG);
	V("reg GSTS", DMAR_GSTS_REG);
	V("reg FSTS", DMAR_FSTS_REG);
	V("reg FECTL", DMAR_FECTL_REG);
	V("reg IQH", DMAR_IQH_REG);
	V("reg IQT", DMAR_IQT_REG);
	V("reg IQA", DMAR_IQA_REG);
	V("reg ICS", DMAR_ICS_REG);
	V("reg IQER", DMAR_IQER_REG);
	V("reg PQH", DMAR_PQH_REG);
	V("reg PQT", DMAR_PQT_REG);
	V("reg PQA", DMAR_PQA_REG);
	V("reg PRS", DMAR_PRS_REG);
	V("reg PECTL", DMAR_PECTL_REG);
	V("reg PEDATA", DMAR_PEDATA_REG);
	V("reg PEADDR", DMAR_PEADDR_REG);
	V("reg PEUADDR", DMAR_PEUADDR_REG);
	V("bit PRS_PPR", DMA_PRS_PPR);
	V("bit PRS_PRO", DMA_PRS_PRO);
	V("bit FSTS_IQE", DMA_FSTS_IQE);
	V("bit GCMD_QIE", DMA_GCMD_QIE);
	V("bit GSTS_QIES", DMA_GSTS_QIES);
	V("ecap ecap_qis", ECAP_MASK(ecap_qis));
	V("ecap ecap_dev_iotlb_support", ECAP_MASK(ecap_dev_iotlb_support));
	V("ecap ecap_prs", ECAP_MASK(ecap_prs));
	V("ecap ecap_pasid", ECAP_MASK(ecap_pasid));
	V("ecap ecap_pds", ECAP_MASK(ecap_pds));
	V("ecap ecap_smts", ECAP_MASK(ecap_smts));
	V("ecap_pss(ECAP_PSS_20)", ecap_pss(@ECAP_PSS_20@ULL));
	V("ECAP_PSS_20 outside ecap_pss", @ECAP_PSS_20@ULL & ~ECAP_MASK(ecap_pss));
	{
		u64 e = @ECAP_PAGE_REQUESTS@ULL;

		V("ECAP_PAGE_REQUESTS ecap_qis", !!ecap_qis(e));
		V("ECAP_PAGE_REQUESTS ecap_dev_iotlb_support", ecap_dev_iotlb_support(e));
		V("ECAP_PAGE_REQUESTS ecap_prs", ecap_prs(e));
		V("ECAP_PAGE_REQUESTS ecap_pasid", ecap_pasid(e));
		V("ECAP_PAGE_REQUESTS ecap_pss", ecap_pss(e));
		V("ECAP_PAGE_REQUESTS ecap_pds", ecap_pds(e));
		V("ECAP_PAGE_REQUESTS ecap_smts", ecap_smts(e));
		V("ECAP_PAGE_REQUESTS other bits", e & ~(ECAP_MASK(ecap_qis) |
			ECAP_MASK(ecap_dev_iotlb_support) | ECAP_MASK(ecap_prs) |
			ECAP_MASK(ecap_pasid) | ECAP_MASK(ecap_pss) | ECAP_MASK(ecap_pds) |
			ECAP_MASK(ecap_smts)));
	}
	drain_wait();
@CALLS@
	return 0;
}
"#;

/// The fields of one page request, as the hardware fills them.
#[derive(Debug, Clone, Copy, Default)]
struct Req {
    pasid_present: bool,
    rid: u16,
    pasid: u32,
    exe: bool,
    pm: bool,
    rd: bool,
    wr: bool,
    lpig: bool,
    prg_index: u16,
    /// `addr`'s 52-bit field: the page frame number.
    pfn: u64,
    /// Private data (6.1 layout only).
    private_data: Option<[u64; 2]>,
}

impl Req {
    fn rust(&self, mode: PrivateDataMode) -> VtdPageRequest {
        let mut perm = Perm::empty();
        perm.set(Perm::READ, self.rd);
        perm.set(Perm::WRITE, self.wr);
        perm.set(Perm::EXEC, self.exe);
        perm.set(Perm::PRIV, self.pm);
        VtdPageRequest {
            rid: self.rid,
            pasid: self.pasid_present.then_some(self.pasid),
            prg_index: self.prg_index,
            perm,
            addr: self.pfn << 12,
            lpig: self.lpig,
            private_data: match mode {
                PrivateDataMode::Carried => self.private_data,
                PrivateDataMode::None => None,
            },
        }
    }

    fn c_args(&self) -> String {
        let b = u8::from;
        format!(
            "{}, {:#x}, {:#x}, {}, {}, {}, {}, {}, {:#x}, {:#x}ULL",
            b(self.pasid_present),
            self.rid,
            self.pasid,
            b(self.exe),
            b(self.pm),
            b(self.rd),
            b(self.wr),
            b(self.lpig),
            self.prg_index,
            self.pfn
        )
    }
}

/// A page group response's inputs.
#[derive(Debug, Clone, Copy)]
struct Resp {
    rid: u16,
    pasid: Option<u32>,
    prg_index: u16,
    code: ResponseCode,
    last_page: bool,
    private_data: Option<[u64; 2]>,
}

impl Resp {
    /// What `PageGroupResponse` is for these inputs (with the VT-d code).
    fn rust(&self, mode: PrivateDataMode) -> PageGroupResponse {
        let pd = match mode {
            PrivateDataMode::Carried => self.private_data,
            PrivateDataMode::None => None,
        };
        PageGroupResponse {
            lpig: self.last_page,
            ..PageGroupResponse::new(self.rid, self.pasid, self.prg_index, self.code, pd)
        }
    }

    fn c_qi_resp(&self) -> &'static str {
        match self.code {
            ResponseCode::Success => "QI_RESP_SUCCESS",
            ResponseCode::Invalid => "QI_RESP_INVALID",
            ResponseCode::Failure => "QI_RESP_FAILURE",
        }
    }
}

/// A wait descriptor's inputs.
#[derive(Debug, Clone, Copy)]
struct Wait {
    data: u32,
    addr: u64,
    sw: bool,
    fence: bool,
    drain: bool,
}

/// SplitMix64: deterministic value sets.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn bits(&mut self, n: u32) -> u64 {
        self.next() & ((1u64 << n) - 1)
    }
    fn flag(&mut self) -> bool {
        self.next() & 1 != 0
    }
}

/// Page requests: none set, each field alone at its maximum, all at their maxima, a hand-made
/// one with distinct values, then pseudo-random ones.
fn requests(rng: &mut Rng) -> Vec<Req> {
    let zero = Req::default();
    let max = Req {
        pasid_present: true,
        rid: 0xffff,
        pasid: 0xf_ffff,
        exe: true,
        pm: true,
        rd: true,
        wr: true,
        lpig: true,
        prg_index: 0x1ff,
        pfn: (1 << 52) - 1,
        private_data: Some([u64::MAX, u64::MAX]),
    };
    let mut v = vec![
        zero,
        Req {
            pasid_present: true,
            ..zero
        },
        Req {
            rid: 0xffff,
            ..zero
        },
        Req {
            pasid_present: true,
            pasid: 0xf_ffff,
            ..zero
        },
        Req { exe: true, ..zero },
        Req { pm: true, ..zero },
        Req { rd: true, ..zero },
        Req { wr: true, ..zero },
        Req { lpig: true, ..zero },
        Req {
            prg_index: 0x1ff,
            ..zero
        },
        Req {
            pfn: (1 << 52) - 1,
            ..zero
        },
        Req {
            private_data: Some([u64::MAX, 0]),
            ..zero
        },
        Req {
            private_data: Some([0, u64::MAX]),
            ..zero
        },
        max,
        Req {
            pasid_present: true,
            rid: 0x3a17,
            pasid: 0x5_c0de,
            exe: true,
            pm: false,
            rd: false,
            wr: true,
            lpig: true,
            prg_index: 0x15b,
            pfn: 0x7_fedc_ba98_7654,
            private_data: Some([0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210]),
        },
    ];
    for _ in 0..48 {
        let pasid_present = rng.flag();
        v.push(Req {
            pasid_present,
            rid: rng.bits(16) as u16,
            pasid: if pasid_present {
                rng.bits(20) as u32
            } else {
                0
            },
            exe: rng.flag(),
            pm: rng.flag(),
            rd: rng.flag(),
            wr: rng.flag(),
            lpig: rng.flag(),
            prg_index: rng.bits(9) as u16,
            pfn: rng.bits(52),
            private_data: rng.flag().then(|| [rng.next(), rng.next()]),
        });
    }
    v
}

/// Page group responses: each field alone, then pseudo-random ones, every code.
fn responses(rng: &mut Rng) -> Vec<Resp> {
    let zero = Resp {
        rid: 0,
        pasid: None,
        prg_index: 0,
        code: ResponseCode::Success,
        last_page: false,
        private_data: None,
    };
    let mut v = vec![
        zero,
        Resp {
            rid: 0xffff,
            ..zero
        },
        Resp {
            pasid: Some(0),
            ..zero
        },
        Resp {
            pasid: Some(0xf_ffff),
            ..zero
        },
        Resp {
            prg_index: 0x1ff,
            ..zero
        },
        Resp {
            code: ResponseCode::Invalid,
            ..zero
        },
        Resp {
            code: ResponseCode::Failure,
            ..zero
        },
        Resp {
            last_page: true,
            ..zero
        },
        Resp {
            private_data: Some([u64::MAX, u64::MAX]),
            ..zero
        },
    ];
    let codes = [
        ResponseCode::Success,
        ResponseCode::Invalid,
        ResponseCode::Failure,
    ];
    for i in 0..48 {
        v.push(Resp {
            rid: rng.bits(16) as u16,
            pasid: rng.flag().then(|| rng.bits(20) as u32),
            prg_index: rng.bits(9) as u16,
            code: codes[i % 3],
            last_page: i % 4 != 0,
            private_data: rng.flag().then(|| [rng.next(), rng.next()]),
        });
    }
    v
}

fn waits(rng: &mut Rng) -> Vec<Wait> {
    let mut v = vec![
        Wait {
            data: 0,
            addr: 0,
            sw: false,
            fence: false,
            drain: false,
        },
        Wait {
            data: u32::MAX,
            addr: !3,
            sw: true,
            fence: true,
            drain: true,
        },
    ];
    for _ in 0..16 {
        v.push(Wait {
            data: rng.next() as u32,
            addr: rng.next() & !3,
            sw: rng.flag(),
            fence: rng.flag(),
            drain: rng.flag(),
        });
    }
    v
}

type Words = Vec<u64>;

/// Parses the C program's `key<TAB>hex hex ...` lines.
fn parse(out: &str) -> BTreeMap<String, Words> {
    out.lines()
        .map(|l| {
            let (k, v) = l
                .split_once('\t')
                .unwrap_or_else(|| panic!("bad line from the C program: {l:?}"));
            let words = v
                .split_whitespace()
                .map(|w| u64::from_str_radix(w, 16).expect("a hex word"))
                .collect();
            (k.to_string(), words)
        })
        .collect()
}

#[test]
fn vtd_descriptors_and_registers_match_linux() {
    let linux = linux_source::linux_files(CACHE, &[PRQ_C, IOMMU_H]);
    let (prq, iommu) = (linux[0].as_str(), linux[1].as_str());

    let mut rng = Rng(0x1092_f0a1_7d5e_c3b4);
    let reqs = requests(&mut rng);
    let resps = responses(&mut rng);
    let wts = waits(&mut rng);

    // What the C program does with the cases, and what Rust expects of it.
    let mut calls = String::new();
    let mut expect: BTreeMap<String, Words> = BTreeMap::new();
    let mut put = |k: String, v: Words| {
        assert!(expect.insert(k.clone(), v).is_none(), "duplicate key {k}");
    };
    let none = PrivateDataMode::None;
    let carried = PrivateDataMode::Carried;
    for (i, r) in reqs.iter().enumerate() {
        writeln!(calls, "\treq612({i}, {});", r.c_args()).expect("fmt");
        put(format!("req612 {i}"), r.rust(none).encode(none).to_vec());
        let (pdp, [pd0, pd1]) = match r.private_data {
            Some(pd) => (1, pd),
            None => (0, [0, 0]),
        };
        writeln!(
            calls,
            "\treq61({i}, {}, {pdp}, {pd0:#x}ULL, {pd1:#x}ULL);",
            r.c_args()
        )
        .expect("fmt");
        put(
            format!("req61 {i}"),
            r.rust(carried).encode(carried).to_vec(),
        );
        // The responses Linux sends by itself for a bad request: 6.12 if LPIG, 6.1 also if PDP.
        let bad = |mode| {
            Resp {
                rid: r.rid,
                pasid: r.pasid_present.then_some(r.pasid),
                prg_index: r.prg_index,
                code: ResponseCode::Invalid,
                last_page: r.lpig,
                private_data: r.private_data,
            }
            .rust(mode)
            .encode(mode)
            .to_vec()
        };
        if r.lpig {
            put(format!("bad612 {i}"), bad(none));
        }
        if r.lpig || r.private_data.is_some() {
            put(format!("bad61 {i}"), bad(carried));
        }
    }
    for (i, r) in resps.iter().enumerate() {
        let (pp, pasid) = (u8::from(r.pasid.is_some()), r.pasid.unwrap_or(0));
        let common = format!(
            "{i}, {:#x}, {pp}, {pasid:#x}, {:#x}, {}",
            r.rid,
            r.prg_index,
            u8::from(r.last_page)
        );
        // With the VT-d codes (QI_RESP_*).
        writeln!(
            calls,
            "\tresp612(\"resp612\", {common}, {});",
            r.c_qi_resp()
        )
        .expect("fmt");
        put(format!("resp612 {i}"), r.rust(none).encode(none).to_vec());
        // With the iommu_page_response code, as intel_iommu_page_response() passes msg->code.
        writeln!(
            calls,
            "\tresp612(\"resp612msg\", {common}, {});",
            r.code.raw()
        )
        .expect("fmt");
        let mut msg = r.rust(none);
        msg.raw_code = r.code.raw() as u8;
        put(format!("resp612msg {i}"), msg.encode(none).to_vec());
        let (pdp, [pd0, pd1]) = match r.private_data {
            Some(pd) => (1, pd),
            None => (0, [0, 0]),
        };
        writeln!(
            calls,
            "\tresp61({common}, {}, {pdp}, {pd0:#x}ULL, {pd1:#x}ULL);",
            r.c_qi_resp()
        )
        .expect("fmt");
        put(
            format!("resp61 {i}"),
            r.rust(carried).encode(carried).to_vec(),
        );
    }
    let rust_wait = |w: &Wait| WaitDescriptor {
        interrupt: false,
        status_write: w.sw,
        fence: w.fence,
        drain: w.drain,
        status_data: w.data,
        status_address: w.addr,
    };
    for (i, w) in wts.iter().enumerate() {
        writeln!(
            calls,
            "\twait_dsc({i}, {:#x}, {:#x}ULL, {}, {}, {});",
            w.data,
            w.addr,
            u8::from(w.sw),
            u8::from(w.fence),
            u8::from(w.drain)
        )
        .expect("fmt");
        put(format!("wait {i}"), rust_wait(w).encode().to_vec());
    }
    let sync_waits = [(0x1_2345_6780u64, false), (0xffff_ffff_ffff_fffc, true)];
    for (i, (addr, drain)) in sync_waits.iter().enumerate() {
        writeln!(
            calls,
            "\tsubmit_sync_wait({i}, {addr:#x}ULL, {});",
            u8::from(*drain)
        )
        .expect("fmt");
        let w = Wait {
            data: QI_DONE,
            addr: *addr,
            sw: true,
            fence: false,
            drain: *drain,
        };
        put(
            format!("submit_sync_wait {i}"),
            rust_wait(&w).encode().to_vec(),
        );
    }
    let drain_wait = Wait {
        data: QI_DONE,
        addr: 0,
        sw: false,
        fence: true,
        drain: false,
    };
    put(
        "drain_wait 0".into(),
        rust_wait(&drain_wait).encode().to_vec(),
    );

    let one = |v: u64| vec![v];
    put("sizeof page_req_dsc".into(), one(DESCRIPTOR_BYTES as u64));
    put(
        "sizeof page_req_dsc_v61".into(),
        one(DESCRIPTOR_BYTES as u64),
    );
    put("sizeof qi_desc".into(), one(32));
    put("const QI_DONE".into(), one(QI_DONE.into()));
    put(
        "const QI_PGRP_RESP_TYPE".into(),
        one(PAGE_GROUP_RESPONSE_TYPE.into()),
    );
    put("const QI_IWD_TYPE".into(), one(WAIT_TYPE.into()));
    for (name, code) in [
        ("SUCCESS", ResponseCode::Success),
        ("INVALID", ResponseCode::Invalid),
        ("FAILURE", ResponseCode::Failure),
    ] {
        let vtd = PageGroupResponse::new(0, None, 0, code, None).raw_code;
        put(format!("const QI_RESP_{name}"), one(vtd.into()));
    }
    for (name, v) in [
        ("VER", regs::VER),
        ("CAP", regs::CAP),
        ("ECAP", regs::ECAP),
        ("GCMD", regs::GCMD),
        ("GSTS", regs::GSTS),
        ("FSTS", regs::FSTS),
        ("FECTL", regs::FECTL),
        ("IQH", regs::IQH),
        ("IQT", regs::IQT),
        ("IQA", regs::IQA),
        ("ICS", regs::ICS),
        ("IQER", regs::IQER),
        ("PQH", regs::PQH),
        ("PQT", regs::PQT),
        ("PQA", regs::PQA),
        ("PRS", regs::PRS),
        ("PECTL", regs::PECTL),
        ("PEDATA", regs::PECTL + 4),
        ("PEADDR", regs::PECTL + 8),
        ("PEUADDR", regs::PECTL + 12),
    ] {
        put(format!("reg {name}"), one(v));
    }
    for (name, v) in [
        ("PRS_PPR", regs::PRS_PPR),
        ("PRS_PRO", regs::PRS_PRO),
        ("FSTS_IQE", regs::FSTS_IQE),
        ("GCMD_QIE", regs::QIE),
        ("GSTS_QIES", regs::QIE),
    ] {
        put(format!("bit {name}"), one(v.into()));
    }
    let ecaps = [
        ("ecap_qis", regs::ECAP_QI),
        ("ecap_dev_iotlb_support", regs::ECAP_DT),
        ("ecap_prs", regs::ECAP_PRS),
        ("ecap_pasid", regs::ECAP_PASID),
        ("ecap_pds", regs::ECAP_PDS),
        ("ecap_smts", regs::ECAP_SMTS),
    ];
    for (name, v) in ecaps {
        put(format!("ecap {name}"), one(v));
        put(format!("ECAP_PAGE_REQUESTS {name}"), one(1));
    }
    // ECAP_PSS_20: PASID size supported 19, i.e. 20-bit PASIDs, within the PSS field.
    put("ecap_pss(ECAP_PSS_20)".into(), one(19));
    put("ECAP_PSS_20 outside ecap_pss".into(), one(0));
    put("ECAP_PAGE_REQUESTS ecap_pss".into(), one(19));
    put("ECAP_PAGE_REQUESTS other bits".into(), one(0));

    // Linux's text, copied out of the two files.
    let resp_fn = "void intel_iommu_page_response(";
    let bad_fn = "static void handle_bad_prq_event(";
    let drain_fn = "void intel_iommu_drain_pasid_prq(";
    let qi_enum_at = iommu
        .find("QI_DONE")
        .unwrap_or_else(|| panic!("{IOMMU_H} has no QI_DONE"));
    let qi_enum_start = iommu[..qi_enum_at]
        .rfind("enum {")
        .unwrap_or_else(|| panic!("{IOMMU_H}: QI_DONE is not in an enum"));
    let src = C_TEMPLATE
        .replace("@DEFINES@", &iommu_h_defines(iommu))
        .replace(
            "@QI_ENUM@",
            &definition(&iommu[qi_enum_start..], "enum {", IOMMU_H),
        )
        .replace("@QI_DESC@", &definition(iommu, "struct qi_desc {", IOMMU_H))
        .replace(
            "@PAGE_REQ_DSC@",
            &definition(prq, "struct page_req_dsc {", PRQ_C),
        )
        .replace(
            "@RESP612_QW0@",
            &statement(prq, resp_fn, "desc.qw0 =", PRQ_C),
        )
        .replace(
            "@RESP612_QW1@",
            &statement(prq, resp_fn, "desc.qw1 =", PRQ_C),
        )
        .replace("@BAD612_QW0@", &statement(prq, bad_fn, "desc.qw0 =", PRQ_C))
        .replace("@BAD612_QW1@", &statement(prq, bad_fn, "desc.qw1 =", PRQ_C))
        .replace(
            "@DRAIN_QW0@",
            &statement(prq, drain_fn, "desc[0].qw0 =", PRQ_C),
        )
        .replace("@ECAP_PSS_20@", &format!("{:#x}", regs::ECAP_PSS_20))
        .replace(
            "@ECAP_PAGE_REQUESTS@",
            &format!("{:#x}", regs::ECAP_PAGE_REQUESTS),
        )
        .replace("@CALLS@", &calls);
    assert!(!src.contains('@'), "a placeholder is left in the C program");

    let c = parse(&linux_source::compile_and_run(
        C_PROGRAM,
        &src,
        &["-std=gnu11", "-Wall", "-Werror"],
    ));

    // Encoding and constants: every C line equals the Rust side, and every Rust fact is checked.
    let hex = |w: &Words| w.iter().map(|x| format!("{x:#018x}")).collect::<Vec<_>>();
    let mut problems: Vec<String> = c
        .iter()
        .filter(|(k, v)| expect.get(*k) != Some(v))
        .map(|(k, v)| format!("{k}: Linux {:?}, Rust {:?}", hex(v), expect.get(k).map(hex)))
        .collect();
    problems.extend(
        expect
            .keys()
            .filter(|k| !c.contains_key(*k))
            .map(|k| format!("{k}: the C program does not print it")),
    );

    // Decoding: Linux's words decode, strictly, to the fields they were built from.
    let words = |k: String| -> [u64; 4] {
        let w = c
            .get(&k)
            .unwrap_or_else(|| panic!("no {k} from the C program"));
        w.as_slice().try_into().expect("four words")
    };
    let mut check = |what: String, ok: bool, detail: String| {
        if !ok {
            problems.push(format!("{what}: {detail}"));
        }
    };
    for (i, r) in reqs.iter().enumerate() {
        for (key, mode) in [("req612", none), ("req61", carried)] {
            let qw = words(format!("{key} {i}"));
            let got = VtdPageRequest::decode(&qw, mode);
            let want = r.rust(mode);
            check(
                format!("decode {key} {i}"),
                got == Ok(want),
                format!("{got:?}, want {want:?}"),
            );
            let fields = VtdPageRequest::fields(&qw, mode);
            check(
                format!("fields {key} {i}"),
                fields == want,
                format!("{fields:?}, want {want:?}"),
            );
        }
        let mut bad = Vec::new();
        if r.lpig {
            bad.push(("bad612", none));
        }
        if r.lpig || r.private_data.is_some() {
            bad.push(("bad61", carried));
        }
        for (key, mode) in bad {
            let got = PageGroupResponse::decode(&words(format!("{key} {i}")), mode);
            let want = Resp {
                rid: r.rid,
                pasid: r.pasid_present.then_some(r.pasid),
                prg_index: r.prg_index,
                code: ResponseCode::Invalid,
                last_page: r.lpig,
                private_data: r.private_data,
            }
            .rust(mode);
            check(
                format!("decode {key} {i}"),
                got == Ok(want),
                format!("{got:?}, want {want:?}"),
            );
        }
    }
    for (i, r) in resps.iter().enumerate() {
        for (key, mode) in [("resp612", none), ("resp61", carried)] {
            let got = PageGroupResponse::decode(&words(format!("{key} {i}")), mode);
            let want = r.rust(mode);
            check(
                format!("decode {key} {i}"),
                got == Ok(want),
                format!("{got:?}, want {want:?}"),
            );
        }
        // msg->code: Success and Invalid are the VT-d codes; FAILURE (2) is reserved in VT-d,
        // read as Response Failure and kept visible.
        let got = PageGroupResponse::decode(&words(format!("resp612msg {i}")), none);
        let mut want = r.rust(none);
        want.raw_code = r.code.raw() as u8;
        let reserved = r.code == ResponseCode::Failure;
        check(
            format!("decode resp612msg {i}"),
            got == Ok(want) && got.is_ok_and(|g| g.raw_code_reserved() == reserved),
            format!("{got:?}, want {want:?} (raw code reserved: {reserved})"),
        );
    }
    let mut all_waits: Vec<(String, Wait)> = wts
        .iter()
        .enumerate()
        .map(|(i, w)| (format!("wait {i}"), *w))
        .collect();
    for (i, (addr, drain)) in sync_waits.iter().enumerate() {
        let w = Wait {
            data: QI_DONE,
            addr: *addr,
            sw: true,
            fence: false,
            drain: *drain,
        };
        all_waits.push((format!("submit_sync_wait {i}"), w));
    }
    all_waits.push(("drain_wait 0".into(), drain_wait));
    for (key, w) in all_waits {
        let got = WaitDescriptor::decode(&words(key.clone()));
        let want = rust_wait(&w);
        check(
            format!("decode {key}"),
            got == Ok(want),
            format!("{got:?}, want {want:?}"),
        );
    }

    assert!(
        problems.is_empty(),
        "iopf_viommu::vtd differs from Linux ({} problems; the C program is in {}):\n{}",
        problems.len(),
        linux_source::c_program_dir(C_PROGRAM).display(),
        problems.join("\n")
    );
}
