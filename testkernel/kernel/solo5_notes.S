/*
 * rhyzome-testkernel: Solo5-style ELF notes, so that provisioners can inspect
 * this image as they would a Solo5 unikernel.
 *
 * Layout (from Solo5's public ABI headers; written out by hand here because
 * this kernel is 32-bit and the notes must have the 64-bit layout Solo5 uses):
 *   note header: namesz = 6 ("Solo5\0", padded to 8), descsz, type.
 *   "ABI1" note (type 0x31494241): target, version, 2 reserved words.
 *   "MFT1" note (type 0x3154464d): 4 bytes of padding (the manifest is 8-byte
 *   aligned after the 20-byte header), version, entry count, then 104-byte
 *   entries: name[68], type (u32), 16 + 8 bytes of unions, a bool, padding.
 *   Entry types: 1 BLOCK_BASIC, 2 NET_BASIC, 1<<30 RESERVED_FIRST (Solo5's
 *   elftool always puts that one first).
 *
 * The Makefile assembles this file once per build: plain for testkernel.elf
 * (one NET_BASIC device, "service"); with -DMFT_ADMIN_NIC for
 * testkernel-2nic.elf, which adds a second one, "admin"; with -DMFT_NO_NET
 * for testkernel-nonet.elf, which declares no device at all (like Solo5's
 * test_hello); with -DMFT_BLOCK for testkernel-block.elf, which adds a
 * BLOCK_BASIC device, "storage"; with -DMFT_NO_NET -DMFT_BLOCK for
 * testkernel-storage.elf (the block device alone) and with -DMFT_BLOCK2 as well for
 * testkernel-2blk.elf (block devices "storage" then "logs").  Solo5 binds manifest devices to virtio PCI
 * devices in PCI order, so "service" is NIC 0 (--ipv4) and "admin" NIC 1
 * (--admin-ipv4).
 *
 * The kernel reads its own manifest at run time (solo5_mft_entries ..
 * solo5_mft_end, see main.c) and, like Solo5, aborts on a virtio device the
 * manifest does not declare.
 */
#define SOLO5_TARGET_VIRTIO 3
#define MFT_BLOCK_BASIC 1
#define MFT_NET_BASIC 2
#define MFT_RESERVED_FIRST 0x40000000

    .section .note.solo5.abi, "a", @note
    .balign 4
    .long 6
    .long 16
    .long 0x31494241
    .asciz "Solo5"
    .balign 4
    .long SOLO5_TARGET_VIRTIO
    .long 1                     /* ABI version */
    .long 0, 0

.macro MFT_ENTRY name, type
1:  .ascii "\name"
    .fill 68 - (. - 1b), 1, 0
    .long \type
    .fill 32, 1, 0
.endm

    .section .note.solo5.manifest, "a", @note
    .balign 4
    .long 6
    .long mft_end - mft_desc
    .long 0x3154464d
    .asciz "Solo5"
    .balign 4
mft_desc:
    .long 0                     /* alignment padding */
    .long 1                     /* manifest version */
    .long (mft_end - mft_entries) / 104 /* entries */
    .globl solo5_mft_entries, solo5_mft_end
solo5_mft_entries:
mft_entries:
    MFT_ENTRY "", MFT_RESERVED_FIRST
#ifndef MFT_NO_NET
    MFT_ENTRY "service", MFT_NET_BASIC
#endif
#ifdef MFT_ADMIN_NIC
    MFT_ENTRY "admin", MFT_NET_BASIC
#endif
#ifdef MFT_BLOCK
    MFT_ENTRY "storage", MFT_BLOCK_BASIC
#endif
#ifdef MFT_BLOCK2
    MFT_ENTRY "logs", MFT_BLOCK_BASIC
#endif
solo5_mft_end:
mft_end:

    .section .note.GNU-stack, "", @progbits
