// One timer for many deadlines of one length: a timer per store call or lease costs a timer-list insert and removal each.

/** A pending deadline; `fire` is null once it fired or was cancelled. */
export interface Deadline {
  readonly at: number;
  fire: (() => void) | null;
}

const now = (): number => performance.now();

/**
 * Deadlines that are all `ms` long, so they fall due in the order they were added: a FIFO queue and one
 * timer, armed for the earliest one. A cancelled deadline stays in the queue until it reaches the head.
 * With `keepAlive`, the timer holds the process open while a deadline is pending (as a `setTimeout` per
 * deadline would); without, it never does (as an unref'd one).
 */
export class Deadlines {
  private readonly queue: Deadline[] = [];
  private head = 0;
  private live = 0;
  private timer: ReturnType<typeof setTimeout> | undefined;
  /** Set while due deadlines fire: one that adds another must not arm a timer later than the queue's head. */
  private firing = false;

  constructor(
    readonly ms: number,
    private readonly keepAlive: boolean,
  ) {}

  /** Calls `fire` once `ms` have passed, unless `cancel` runs first. */
  add(fire: () => void): Deadline {
    const deadline: Deadline = { at: now() + this.ms, fire };
    this.queue.push(deadline);
    if (this.live++ === 0 && this.keepAlive) this.timer?.ref?.();
    if (this.timer === undefined && !this.firing) this.arm(this.ms);
    return deadline;
  }

  /** Drops a pending deadline; a no-op once it fired or was cancelled. */
  cancel(deadline: Deadline): void {
    if (deadline.fire === null) return;
    deadline.fire = null;
    this.settled();
    this.trim();
  }

  private settled(): void {
    if (--this.live === 0 && this.keepAlive) this.timer?.unref?.();
  }

  /** Drops the head's cancelled deadlines, and resets the queue once it is empty. */
  private trim(): void {
    const q = this.queue;
    while (this.head < q.length && (q[this.head] as Deadline).fire === null) this.head++;
    if (this.head === q.length) {
      q.length = 0;
      this.head = 0;
    } else if (this.head > 1024 && this.head * 2 > q.length) {
      q.splice(0, this.head);
      this.head = 0;
    }
  }

  private arm(delay: number): void {
    this.timer = setTimeout(() => this.due(), Math.max(1, Math.ceil(delay)));
    if (!this.keepAlive || this.live === 0) this.timer.unref?.();
  }

  private due(): void {
    this.timer = undefined;
    this.firing = true;
    const t = now();
    const q = this.queue;
    try {
      while (this.head < q.length) {
        const d = q[this.head] as Deadline;
        if (d.fire !== null && d.at > t) break;
        this.head++;
        const fire = d.fire;
        if (fire === null) continue;
        d.fire = null;
        this.settled();
        fire();
      }
    } finally {
      this.firing = false;
      this.trim();
      if (this.head < q.length) this.arm((q[this.head] as Deadline).at - now());
    }
  }
}
