/*
 * rhyzome-testkernel: IDT, 8259 PIC, PIT and the TSC clock.
 *
 * Time: the TSC is calibrated against PIT channel 0 at boot (median of three
 * ~4 ms windows), then PIT channel 0 is reprogrammed to a 100 Hz periodic
 * interrupt which is used only to wake the CPU from hlt.  Under QEMU TCG both
 * the PIT and the TSC follow the host clock, so the calibration holds.
 */
#include "kernel.h"

struct idt_entry {
    uint16_t off_lo;
    uint16_t sel;
    uint8_t zero;
    uint8_t type;
    uint16_t off_hi;
} __attribute__((packed));

struct trap_frame {
    uint32_t edi, esi, ebp, esp, ebx, edx, ecx, eax; /* pusha */
    uint32_t vector, error;
    uint32_t eip, cs, eflags;
};

extern const uint32_t trap_table[32];
extern void irq_timer(void);
extern void irq_rtc(void);
extern void irq_spurious_master(void);
extern void irq_spurious_slave(void);

static struct idt_entry idt[0x30] __attribute__((aligned(8)));
static volatile uint32_t ticks;
static uint64_t tsc_base, tsc_per_ms;

static void idt_set(unsigned v, uint32_t handler)
{
    idt[v].off_lo = (uint16_t)handler;
    idt[v].sel = 0x08;
    idt[v].zero = 0;
    idt[v].type = 0x8E; /* present, ring 0, 32-bit interrupt gate */
    idt[v].off_hi = (uint16_t)(handler >> 16);
}

static void pic_init(void)
{
    /* Remap the PICs to vectors 0x20..0x2f, mask everything but IRQ 0. */
    outb(0x20, 0x11);
    outb(0xA0, 0x11);
    outb(0x21, 0x20);
    outb(0xA1, 0x28);
    outb(0x21, 0x04);
    outb(0xA1, 0x02);
    outb(0x21, 0x01);
    outb(0xA1, 0x01);
    outb(0x21, 0xFF);
    outb(0xA1, 0xFF);
}

void cpu_init(void)
{
    struct {
        uint16_t limit;
        uint32_t base;
    } __attribute__((packed)) idtr;

    for (unsigned v = 0; v < 32; v++)
        idt_set(v, trap_table[v]);
    idt_set(0x20, (uint32_t)irq_timer);
    for (unsigned v = 0x21; v < 0x28; v++)
        idt_set(v, (uint32_t)irq_spurious_master);
    for (unsigned v = 0x28; v < 0x30; v++)
        idt_set(v, (uint32_t)irq_spurious_slave);
    idt_set(0x28, (uint32_t)irq_rtc);
    idtr.limit = sizeof(idt) - 1;
    idtr.base = (uint32_t)idt;
    __asm__ volatile("lidt %0" : : "m"(idtr));
    pic_init();
}

static const char *const trap_names[32] = {
    "#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM",
    "#DF", "#MF", "#TS", "#NP", "#SS", "#GP", "#PF", "#15",
    "#MF", "#AC", "#MC", "#XM", "#VE", "#CP", "#22", "#23",
    "#24", "#25", "#26", "#27", "#28", "#HV", "#VC", "#SX"};

void trap_handler(struct trap_frame *f);
void trap_handler(struct trap_frame *f)
{
    const char *name = f->vector < 32 ? trap_names[f->vector] : "?";
    kprintf("Solo5: trap: type=%s ec=0x%x eip=0x%x eflags=0x%x\n", name,
            f->error, f->eip, f->eflags);
    PANIC("Fatal trap");
}

void timer_tick(void);
void timer_tick(void)
{
    ticks++;
    outb(0x20, 0x20); /* EOI */
}

static uint16_t pit_read(void)
{
    uint8_t lo, hi;
    outb(0x43, 0x00); /* latch channel 0 */
    lo = inb(0x40);
    hi = inb(0x40);
    return (uint16_t)(lo | (hi << 8));
}

#define PIT_HZ 1193182u
/* Wake-up tick for the idle loop. 100 Hz rather than 1 kHz: under TCG every timer interrupt
 * costs host CPU, and a test bed runs many idle guests on few cores; the price is up to
 * 10 ms of extra latency for a packet that arrives while the guest sleeps. */
#define TICK_HZ 100u

/* TSC ticks per millisecond measured over want PIT ticks. */
static uint64_t calibrate_once(uint32_t want)
{
    uint16_t prev = pit_read(), cur;
    uint32_t elapsed = 0;
    uint64_t t0 = rdtsc(), t1;
    while (elapsed < want) {
        cur = pit_read();
        elapsed += (uint16_t)(prev - cur); /* counts down, wraps at 65536 */
        prev = cur;
    }
    t1 = rdtsc();
    return udiv64((t1 - t0) * PIT_HZ, (uint64_t)elapsed * 1000);
}

void time_init(void)
{
    uint64_t s[3], t;
    /* channel 0, lo/hi byte, mode 2 (rate generator), reload 65536 */
    outb(0x43, 0x34);
    outb(0x40, 0);
    outb(0x40, 0);
    for (int i = 0; i < 3; i++)
        s[i] = calibrate_once(PIT_HZ / 250); /* 4 ms */
    /* median of three */
    if (s[0] > s[1]) { t = s[0]; s[0] = s[1]; s[1] = t; }
    if (s[1] > s[2]) { t = s[1]; s[1] = s[2]; s[2] = t; }
    if (s[0] > s[1]) { t = s[0]; s[0] = s[1]; s[1] = t; }
    tsc_per_ms = s[1] ? s[1] : 1;
    tsc_base = rdtsc();
    /* TICK_HZ periodic wake-up interrupt */
    outb(0x43, 0x34);
    outb(0x40, (uint8_t)((PIT_HZ / TICK_HZ) & 0xff));
    outb(0x40, (uint8_t)((PIT_HZ / TICK_HZ) >> 8));
    outb(0x21, 0xFA); /* unmask IRQ 0 and the cascade (IRQ 2) */
    outb(0xA1, 0xFE); /* unmask IRQ 8, the RTC (rtc.c) */
    rtc_init();
}

uint64_t tsc_per_ms_rate(void)
{
    return tsc_per_ms;
}

int time_ready(void)
{
    return tsc_per_ms != 0;
}

uint64_t uptime_ms(void)
{
    if (!tsc_per_ms)
        return 0;
    return udiv64(rdtsc() - tsc_base, tsc_per_ms);
}

uint64_t uptime_us(void)
{
    if (!tsc_per_ms)
        return 0;
    return udiv64((rdtsc() - tsc_base) * 1000, tsc_per_ms);
}

void idle_wait(void)
{
    /* sti takes effect after the next instruction, so no tick is lost
     * between sti and hlt. */
    __asm__ volatile("sti; hlt; cli" : : : "memory");
}

void delay_ms(uint32_t ms)
{
    if (tsc_per_ms) {
        uint64_t end = rdtsc() + tsc_per_ms * ms;
        while (rdtsc() < end)
            __asm__ volatile("pause");
    } else {
        for (volatile uint32_t i = 0; i < ms * 100000u; i++)
            ;
    }
}
