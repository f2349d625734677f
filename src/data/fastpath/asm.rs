//! A tiny BPF assembler: the instruction encoding (`struct bpf_insn`) and a builder with named
//! jump labels, so [`program`](super::program) reads as a listing and its jump offsets are
//! computed, not counted by hand.
//!
//! Only the instructions the fast path uses exist here. The output is a `Vec<Insn>` handed to
//! `BPF_PROG_LOAD` as is; the kernel's verifier, not this module, decides whether a program is
//! safe.
#![forbid(unsafe_code)]

use std::collections::HashMap;

/// One BPF instruction, laid out as the kernel's `struct bpf_insn` (8 bytes): opcode, the
/// destination register in the low nibble and the source register in the high nibble of
/// `regs` (the kernel's bitfields on a little-endian host; BPF on big-endian hosts swaps
/// them, see [`Insn::new`]), a signed 16-bit offset and a signed 32-bit immediate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub(crate) struct Insn {
    pub code: u8,
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

const _: () = assert!(std::mem::size_of::<Insn>() == 8);

impl Insn {
    pub(crate) const fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
        // `__u8 dst_reg:4, src_reg:4`: the first-declared bitfield takes the low bits on
        // little-endian ABIs and the high bits on big-endian ones.
        let regs = if cfg!(target_endian = "little") {
            (src << 4) | (dst & 0x0f)
        } else {
            (dst << 4) | (src & 0x0f)
        };
        Insn {
            code,
            regs,
            off,
            imm,
        }
    }
}

/// Registers: R0 return value / helper result, R1–R5 helper arguments (clobbered by calls),
/// R6–R9 callee-saved, R10 the read-only frame pointer.
pub(crate) const R0: u8 = 0;
pub(crate) const R1: u8 = 1;
pub(crate) const R2: u8 = 2;
pub(crate) const R3: u8 = 3;
pub(crate) const R4: u8 = 4;
pub(crate) const R6: u8 = 6;
pub(crate) const R7: u8 = 7;
pub(crate) const R8: u8 = 8;
pub(crate) const R10: u8 = 10;

/// Access sizes of loads and stores.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Size {
    /// 32 bits (`BPF_W`).
    W,
    /// 64 bits (`BPF_DW`).
    DW,
}

impl Size {
    fn bits(self) -> u8 {
        match self {
            Size::W => 0x00,
            Size::DW => 0x18,
        }
    }
}

// Instruction classes, modes and operations (include/uapi/linux/bpf_common.h, bpf.h).
const BPF_LD: u8 = 0x00;
const BPF_LDX: u8 = 0x01;
const BPF_ST: u8 = 0x02;
const BPF_STX: u8 = 0x03;
const BPF_JMP: u8 = 0x05;
const BPF_ALU64: u8 = 0x07;
const BPF_IMM: u8 = 0x00;
const BPF_MEM: u8 = 0x60;
const BPF_ATOMIC: u8 = 0xc0;
const BPF_K: u8 = 0x00;
const BPF_X: u8 = 0x08;
const BPF_ADD: u8 = 0x00;
const BPF_OR: u8 = 0x40;
const BPF_AND: u8 = 0x50;
const BPF_MOV: u8 = 0xb0;
const BPF_JA: u8 = 0x00;
const BPF_JEQ: u8 = 0x10;
const BPF_JNE: u8 = 0x50;
const BPF_CALL: u8 = 0x80;
const BPF_EXIT: u8 = 0x90;
/// `src_reg` of a 64-bit immediate load whose `imm` is a map fd (the kernel swaps in the map).
const BPF_PSEUDO_MAP_FD: u8 = 1;

/// Why an instruction list could not be assembled (a bug in the program text, never input).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AsmError {
    #[error("jump to undefined label `{0}`")]
    UndefinedLabel(&'static str),
    #[error("label `{0}` defined twice")]
    DuplicateLabel(&'static str),
    #[error("jump to `{0}` is out of the 16-bit offset range")]
    JumpTooFar(&'static str),
}

/// Builds an instruction list; jumps name a label that [`Asm::label`] places later (or
/// earlier), and [`Asm::finish`] turns the names into offsets.
#[derive(Debug, Default)]
pub(crate) struct Asm {
    insns: Vec<Insn>,
    labels: HashMap<&'static str, usize>,
    /// (index of a jump instruction, its label), resolved by `finish`.
    jumps: Vec<(usize, &'static str)>,
    duplicate: Option<&'static str>,
}

impl Asm {
    pub(crate) fn new() -> Asm {
        Asm::default()
    }

    fn push(&mut self, insn: Insn) -> &mut Asm {
        self.insns.push(insn);
        self
    }

    /// `dst = src` (64-bit).
    pub(crate) fn mov64_reg(&mut self, dst: u8, src: u8) -> &mut Asm {
        self.push(Insn::new(BPF_ALU64 | BPF_MOV | BPF_X, dst, src, 0, 0))
    }

    /// `dst = imm` (64-bit, sign-extended).
    pub(crate) fn mov64_imm(&mut self, dst: u8, imm: i32) -> &mut Asm {
        self.push(Insn::new(BPF_ALU64 | BPF_MOV | BPF_K, dst, 0, 0, imm))
    }

    /// `dst += imm` (64-bit).
    pub(crate) fn add64_imm(&mut self, dst: u8, imm: i32) -> &mut Asm {
        self.push(Insn::new(BPF_ALU64 | BPF_ADD | BPF_K, dst, 0, 0, imm))
    }

    /// `dst &= imm` (64-bit).
    pub(crate) fn and64_imm(&mut self, dst: u8, imm: i32) -> &mut Asm {
        self.push(Insn::new(BPF_ALU64 | BPF_AND | BPF_K, dst, 0, 0, imm))
    }

    /// `dst |= imm` (64-bit).
    pub(crate) fn or64_imm(&mut self, dst: u8, imm: i32) -> &mut Asm {
        self.push(Insn::new(BPF_ALU64 | BPF_OR | BPF_K, dst, 0, 0, imm))
    }

    /// `dst = *(size *)(src + off)`.
    pub(crate) fn ldx(&mut self, size: Size, dst: u8, src: u8, off: i16) -> &mut Asm {
        self.push(Insn::new(BPF_LDX | BPF_MEM | size.bits(), dst, src, off, 0))
    }

    /// `*(size *)(dst + off) = src`.
    pub(crate) fn stx(&mut self, size: Size, dst: u8, off: i16, src: u8) -> &mut Asm {
        self.push(Insn::new(BPF_STX | BPF_MEM | size.bits(), dst, src, off, 0))
    }

    /// `*(size *)(dst + off) = imm`.
    pub(crate) fn st_imm(&mut self, size: Size, dst: u8, off: i16, imm: i32) -> &mut Asm {
        self.push(Insn::new(BPF_ST | BPF_MEM | size.bits(), dst, 0, off, imm))
    }

    /// `lock *(u64 *)(dst + off) += src` (atomic add, no fetch).
    pub(crate) fn atomic_add64(&mut self, dst: u8, off: i16, src: u8) -> &mut Asm {
        self.push(Insn::new(
            BPF_STX | BPF_ATOMIC | Size::DW.bits(),
            dst,
            src,
            off,
            i32::from(BPF_ADD),
        ))
    }

    /// `dst = map` — the two-slot 64-bit immediate load of a map fd, which the kernel
    /// replaces by the map's address when it loads the program.
    pub(crate) fn ld_map_fd(&mut self, dst: u8, map_fd: i32) -> &mut Asm {
        self.push(Insn::new(
            BPF_LD | BPF_IMM | Size::DW.bits(),
            dst,
            BPF_PSEUDO_MAP_FD,
            0,
            map_fd,
        ));
        self.push(Insn::new(0, 0, 0, 0, 0))
    }

    /// `if dst == imm goto label`.
    pub(crate) fn jeq_imm(&mut self, dst: u8, imm: i32, label: &'static str) -> &mut Asm {
        self.jump(BPF_JMP | BPF_JEQ | BPF_K, dst, imm, label)
    }

    /// `if dst != imm goto label`.
    pub(crate) fn jne_imm(&mut self, dst: u8, imm: i32, label: &'static str) -> &mut Asm {
        self.jump(BPF_JMP | BPF_JNE | BPF_K, dst, imm, label)
    }

    /// `goto label`.
    pub(crate) fn ja(&mut self, label: &'static str) -> &mut Asm {
        self.jump(BPF_JMP | BPF_JA, 0, 0, label)
    }

    fn jump(&mut self, code: u8, dst: u8, imm: i32, label: &'static str) -> &mut Asm {
        self.jumps.push((self.insns.len(), label));
        self.push(Insn::new(code, dst, 0, 0, imm))
    }

    /// `call helper` — R1–R5 are the arguments, R0 the result; R1–R5 are clobbered.
    pub(crate) fn call(&mut self, helper: i32) -> &mut Asm {
        self.push(Insn::new(BPF_JMP | BPF_CALL, 0, 0, 0, helper))
    }

    /// `return R0`.
    pub(crate) fn exit(&mut self) -> &mut Asm {
        self.push(Insn::new(BPF_JMP | BPF_EXIT, 0, 0, 0, 0))
    }

    /// Places `name` at the next instruction.
    pub(crate) fn label(&mut self, name: &'static str) -> &mut Asm {
        if self.labels.insert(name, self.insns.len()).is_some() {
            self.duplicate.get_or_insert(name);
        }
        self
    }

    /// Resolves the jumps: a jump's offset counts from the instruction after it.
    pub(crate) fn finish(mut self) -> Result<Vec<Insn>, AsmError> {
        if let Some(name) = self.duplicate {
            return Err(AsmError::DuplicateLabel(name));
        }
        for (at, label) in &self.jumps {
            let target = *self
                .labels
                .get(label)
                .ok_or(AsmError::UndefinedLabel(label))?;
            let off = target as i64 - (*at as i64 + 1);
            self.insns[*at].off = i16::try_from(off).map_err(|_| AsmError::JumpTooFar(label))?;
        }
        Ok(self.insns)
    }

    /// Instructions so far (for tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.insns.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_like_the_kernel_headers() {
        // Reference encodings as `bpftool prog dump xlated opcodes` / llvm-objdump print them.
        let mut a = Asm::new();
        a.mov64_reg(R6, R1) // bf 16 00 00 00 00 00 00
            .ldx(Size::W, R2, R6, 32) // 61 62 20 00 00 00 00 00
            .or64_imm(R2, 4) // 47 02 00 00 04 00 00 00
            .st_imm(Size::W, R10, -24, 2) // 62 0a e8 ff 02 00 00 00
            .atomic_add64(R0, 0, R1) // db 10 00 00 00 00 00 00
            .ld_map_fd(R1, 7) // 18 11 00 00 07 00 00 00 + 00 ...
            .call(1) // 85 00 00 00 01 00 00 00
            .exit(); // 95 ...
        let insns = a.finish().unwrap();
        let bytes = |i: &Insn| {
            let mut v = vec![i.code, i.regs];
            v.extend_from_slice(&i.off.to_le_bytes());
            v.extend_from_slice(&i.imm.to_le_bytes());
            v
        };
        if cfg!(target_endian = "little") {
            assert_eq!(bytes(&insns[0]), [0xbf, 0x16, 0, 0, 0, 0, 0, 0]);
            assert_eq!(bytes(&insns[1]), [0x61, 0x62, 0x20, 0, 0, 0, 0, 0]);
            assert_eq!(bytes(&insns[2]), [0x47, 0x02, 0, 0, 4, 0, 0, 0]);
            assert_eq!(bytes(&insns[3]), [0x62, 0x0a, 0xe8, 0xff, 2, 0, 0, 0]);
            assert_eq!(bytes(&insns[4]), [0xdb, 0x10, 0, 0, 0, 0, 0, 0]);
            assert_eq!(bytes(&insns[5]), [0x18, 0x11, 0, 0, 7, 0, 0, 0]);
            assert_eq!(bytes(&insns[6]), [0; 8]);
            assert_eq!(bytes(&insns[7]), [0x85, 0, 0, 0, 1, 0, 0, 0]);
            assert_eq!(bytes(&insns[8]), [0x95, 0, 0, 0, 0, 0, 0, 0]);
        }
    }

    #[test]
    fn jumps_count_from_the_next_instruction() {
        let mut a = Asm::new();
        a.label("top")
            .jeq_imm(R0, 0, "end") // 0 → end is 4: off 3
            .mov64_imm(R0, 1)
            .jne_imm(R0, 0, "top") // 2 → top is 0: off -3
            .ja("end") // 3 → end is 4: off 0
            .label("end")
            .exit();
        assert_eq!(a.len(), 5);
        let insns = a.finish().unwrap();
        assert_eq!(insns[0].off, 3);
        assert_eq!(insns[2].off, -3);
        // `goto`: 05 00 <off> 00000000
        assert_eq!((insns[3].code, insns[3].regs, insns[3].off), (0x05, 0, 0));
    }

    #[test]
    fn label_mistakes_are_errors_not_panics() {
        let mut a = Asm::new();
        a.jeq_imm(R0, 0, "nowhere").exit();
        assert_eq!(a.finish(), Err(AsmError::UndefinedLabel("nowhere")));
        let mut a = Asm::new();
        a.label("x").label("x").exit();
        assert_eq!(a.finish(), Err(AsmError::DuplicateLabel("x")));
    }
}
