/* Loops forever (the compiler may not remove the loop: it has a side effect). */
volatile unsigned long counter;
int main(void) {
    for (;;) counter++;
}
