//! The two CRC-16 variants HJ 212 devices send, plus "not checked".
//!
//! HJ 212-2017 Appendix A gives, in C, an algorithm that differs from CRC-16/MODBUS in
//! one step: each byte is folded in as `reg = (reg >> 8) ^ byte` instead of
//! `reg ^= byte`, followed by the same eight reflected shifts with polynomial 0xA001
//! from 0xFFFF. The appendix's worked example gives `1C80` (its prose misprints it as
//! `1C08`); CRC-16/MODBUS over the same bytes gives `0759`. Many field devices send the
//! Modbus value, so the variant is a per-device setting.
//!
//! Both are table-driven: eight shifts of a 16-bit register whose low byte is `i`
//! always XOR the same pattern `TABLE[i]` into the register shifted right by eight, so
//! one table serves both variants (the tests check it against the bit-by-bit text).

use std::fmt;

/// Which CRC a device puts in its frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CrcVariant {
    /// HJ 212-2017 Appendix A (`reg = (reg >> 8) ^ byte`).
    #[default]
    Hj212,
    /// CRC-16/MODBUS (`reg ^= byte`), what many field devices send.
    Modbus,
    /// Not checked (the field must still be four hex digits). The encoder writes the
    /// Appendix A value.
    None,
}

impl CrcVariant {
    /// Parses the configuration spelling: `hj212`, `modbus` or `none`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "hj212" => Some(Self::Hj212),
            "modbus" => Some(Self::Modbus),
            "none" => Some(Self::None),
            _ => None,
        }
    }

    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hj212 => "hj212",
            Self::Modbus => "modbus",
            Self::None => "none",
        }
    }

    /// The CRC of `data` under this variant; `None` for [`CrcVariant::None`].
    pub fn compute(self, data: &[u8]) -> Option<u16> {
        match self {
            Self::Hj212 => Some(crc_hj212(data)),
            Self::Modbus => Some(crc_modbus(data)),
            Self::None => None,
        }
    }
}

impl fmt::Display for CrcVariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `TABLE[i]`: what eight reflected shifts with polynomial 0xA001 XOR into a register
/// whose low byte is `i`.
const TABLE: [u16; 256] = {
    let mut t = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut reg = i as u16;
        let mut bit = 0;
        while bit < 8 {
            let lsb = reg & 1;
            reg >>= 1;
            if lsb != 0 {
                reg ^= 0xA001;
            }
            bit += 1;
        }
        t[i] = reg;
        i += 1;
    }
    t
};

/// The HJ 212-2017 Appendix A CRC of a data segment.
pub fn crc_hj212(data: &[u8]) -> u16 {
    // (reg >> 8) ^ b has a zero high byte, so the shifted-out part is zero too.
    data.iter()
        .fold(0xFFFF, |reg, &b| TABLE[usize::from((reg >> 8) as u8 ^ b)])
}

/// CRC-16/MODBUS of a data segment.
pub fn crc_modbus(data: &[u8]) -> u16 {
    data.iter().fold(0xFFFF, |reg: u16, &b| {
        (reg >> 8) ^ TABLE[usize::from(reg as u8 ^ b)]
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The Appendix A algorithm exactly as the standard's text gives it.
    fn hj212_bitwise(data: &[u8]) -> u16 {
        let mut reg: u16 = 0xFFFF;
        for &b in data {
            reg = (reg >> 8) ^ u16::from(b);
            for _ in 0..8 {
                let lsb = reg & 1;
                reg >>= 1;
                if lsb != 0 {
                    reg ^= 0xA001;
                }
            }
        }
        reg
    }

    fn modbus_bitwise(data: &[u8]) -> u16 {
        let mut reg: u16 = 0xFFFF;
        for &b in data {
            reg ^= u16::from(b);
            for _ in 0..8 {
                let lsb = reg & 1;
                reg >>= 1;
                if lsb != 0 {
                    reg ^= 0xA001;
                }
            }
        }
        reg
    }

    const APPENDIX_A: &[u8] = b"QN=20160801085857223;ST=32;CN=1062;PW=100000;MN=010000A8900016F000169DC0;Flag=5;CP=&&RtdInterval=30&&";

    #[test]
    fn appendix_a_example_is_1c80_and_modbus_gives_0759() {
        assert_eq!(crc_hj212(APPENDIX_A), 0x1C80);
        assert_eq!(hj212_bitwise(APPENDIX_A), 0x1C80);
        assert_eq!(crc_modbus(APPENDIX_A), 0x0759);
        assert_eq!(modbus_bitwise(APPENDIX_A), 0x0759);
        // The catalogue check value of CRC-16/MODBUS.
        assert_eq!(crc_modbus(b"123456789"), 0x4B37);
    }

    #[test]
    fn variants_parse_and_print() {
        for v in [CrcVariant::Hj212, CrcVariant::Modbus, CrcVariant::None] {
            assert_eq!(CrcVariant::parse(v.as_str()), Some(v));
        }
        assert_eq!(CrcVariant::parse("crc16"), None);
        assert_eq!(CrcVariant::None.compute(b"x"), None);
    }

    proptest! {
        #[test]
        fn tables_match_the_bitwise_text(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            prop_assert_eq!(crc_hj212(&data), hj212_bitwise(&data));
            prop_assert_eq!(crc_modbus(&data), modbus_bitwise(&data));
        }
    }
}
