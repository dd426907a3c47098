/*
 * rhyzome-testkernel: multiboot v1 header, entry point, GDT and trap stubs.
 */
#define MB_MAGIC 0x1BADB002
#define MB_FLAGS 0x00000003 /* bit 0: page-align modules, bit 1: memory info */

    .section .multiboot, "a"
    .align 4
multiboot_header:
    .long MB_MAGIC
    .long MB_FLAGS
    .long -(MB_MAGIC + MB_FLAGS)

    .section .text
    .code32
    .global _start
_start:
    cli
    cld
    /* keep the multiboot magic (eax) and info pointer (ebx) */
    mov %eax, %esi
    mov %ebx, %ebp
    lgdt gdt_desc
    ljmp $0x08, $1f
1:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %fs
    mov %ax, %gs
    mov %ax, %ss
    /* zero .bss (the loader should have, but do not rely on it) */
    mov $__bss_start, %edi
    mov $__bss_end, %ecx
    sub %edi, %ecx
    xor %eax, %eax
    rep stosb
    mov $boot_stack_top, %esp
    xor %eax, %eax
    push %eax
    popf                /* clear flags, IF=0, DF=0 */
    push %ebp           /* multiboot info */
    push %esi           /* multiboot magic */
    call kmain
2:  cli
    hlt
    jmp 2b

/* ---- trap stubs: build a uniform frame and call trap_handler ---------- */
.macro TRAP_NOERR n
trap\n:
    push $0
    push $\n
    jmp trap_common
.endm
.macro TRAP_ERR n
trap\n:
    push $\n
    jmp trap_common
.endm

TRAP_NOERR 0
TRAP_NOERR 1
TRAP_NOERR 2
TRAP_NOERR 3
TRAP_NOERR 4
TRAP_NOERR 5
TRAP_NOERR 6
TRAP_NOERR 7
TRAP_ERR 8
TRAP_NOERR 9
TRAP_ERR 10
TRAP_ERR 11
TRAP_ERR 12
TRAP_ERR 13
TRAP_ERR 14
TRAP_NOERR 15
TRAP_NOERR 16
TRAP_ERR 17
TRAP_NOERR 18
TRAP_NOERR 19
TRAP_NOERR 20
TRAP_ERR 21
TRAP_NOERR 22
TRAP_NOERR 23
TRAP_NOERR 24
TRAP_NOERR 25
TRAP_NOERR 26
TRAP_NOERR 27
TRAP_NOERR 28
TRAP_ERR 29
TRAP_ERR 30
TRAP_NOERR 31

trap_common:
    pusha
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    push %esp           /* struct trap_frame * */
    call trap_handler   /* does not return */
3:  cli
    hlt
    jmp 3b

    .global irq_timer
irq_timer:
    pusha
    call timer_tick
    popa
    iret

    /* IRQ 8: the RTC's update-ended interrupt (rtc.c) */
    .global irq_rtc
irq_rtc:
    pusha
    call rtc_interrupt
    popa
    iret

    /* IRQ 1..7 of the master PIC: all masked, so only spurious IRQ 7 */
    .global irq_spurious_master
irq_spurious_master:
    iret

    /* IRQ 8..15 of the slave PIC: all masked; spurious IRQ 15 needs an
     * EOI to the master only */
    .global irq_spurious_slave
irq_spurious_slave:
    push %eax
    mov $0x20, %al
    outb %al, $0x20
    pop %eax
    iret

    .section .rodata
    .align 4
    .global trap_table
trap_table:
    .long trap0, trap1, trap2, trap3, trap4, trap5, trap6, trap7
    .long trap8, trap9, trap10, trap11, trap12, trap13, trap14, trap15
    .long trap16, trap17, trap18, trap19, trap20, trap21, trap22, trap23
    .long trap24, trap25, trap26, trap27, trap28, trap29, trap30, trap31

    .align 8
gdt:
    .quad 0x0000000000000000
    .quad 0x00CF9A000000FFFF    /* 0x08: flat 32-bit code */
    .quad 0x00CF92000000FFFF    /* 0x10: flat 32-bit data */
gdt_end:
    .align 4
    .word 0
gdt_desc:
    .word gdt_end - gdt - 1
    .long gdt

    .section .bss
    .align 16
boot_stack:
    .space 16384
boot_stack_top:

    .section .note.GNU-stack, "", @progbits
