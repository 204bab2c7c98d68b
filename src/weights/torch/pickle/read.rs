//! Reading opcode arguments from the pickle stream, bounds-checked.

use super::Vm;
use crate::error::Result;

impl<'a> Vm<'a> {
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.code.len())
            .ok_or_else(|| self.err(format!("truncated: needs {n} more bytes")))?;
        let out = &self.code[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    pub(crate) fn byte(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    pub(crate) fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn u64(&mut self) -> Result<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    pub(crate) fn len64(&mut self) -> Result<usize> {
        let n = self.u64()?;
        usize::try_from(n).map_err(|_| self.err(format!("length {n} too large")))
    }

    pub(crate) fn line(&mut self) -> Result<&'a str> {
        let rest = &self.code[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| self.err("unterminated GLOBAL name"))?;
        let s =
            std::str::from_utf8(&rest[..n]).map_err(|_| self.err("GLOBAL name is not UTF-8"))?;
        self.pos += n + 1;
        Ok(s)
    }

    /// Little-endian two's-complement integer of `n` bytes (LONG1/LONG4).
    pub(crate) fn long(&mut self, n: usize) -> Result<i64> {
        let b = self.take(n)?;
        if n > 8 {
            return Err(self.err(format!("{n}-byte integer does not fit in 64 bits")));
        }
        if n == 0 {
            return Ok(0);
        }
        let fill = if b[n - 1] & 0x80 != 0 { 0xff } else { 0 };
        let mut a = [fill; 8];
        a[..n].copy_from_slice(b);
        Ok(i64::from_le_bytes(a))
    }

    // -- stack --
}
