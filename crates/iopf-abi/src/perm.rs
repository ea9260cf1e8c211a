//! Access permissions of a fault (`IOMMU_FAULT_PERM_*`, `IOMMU_PGFAULT_PERM_*`: the same bits).

bitflags::bitflags! {
    /// What the faulting access asked for. Read, write, and the PASID TLP prefix's Execute
    /// Requested and Privileged Mode Requested bits (PCIe 10.4.1).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct Perm: u32 {
        /// `IOMMU_FAULT_PERM_READ`: read access.
        const READ = 1 << 0;
        /// `IOMMU_FAULT_PERM_WRITE`: write access.
        const WRITE = 1 << 1;
        /// `IOMMU_FAULT_PERM_EXEC`: execute requested.
        const EXEC = 1 << 2;
        /// `IOMMU_FAULT_PERM_PRIV`: privileged mode requested.
        const PRIV = 1 << 3;
    }
}

impl Perm {
    /// Decodes a permission field, naming `field` if it carries unknown bits.
    #[inline]
    pub fn decode(bits: u32, field: &'static str) -> Result<Perm, crate::AbiError> {
        Perm::from_bits(bits).ok_or(crate::AbiError::UnknownFlags {
            field,
            bits: bits & !Perm::all().bits(),
        })
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for Perm {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        crate::features::serialize_flag_names(self.iter_names().map(|(n, _)| n), s)
    }
}
