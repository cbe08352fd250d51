// The demo composition: every item of "text" upper-cased, then reversed.
function upper (in) => (out);
function reverse (in) => (out);

composition shout_backwards (text) => (result) {
    upper (in = each text) => (loud = out);       // one sandbox per item
    reverse (in = each loud) => (result = out);   // and again
}

// Word counts of every item of "text" after shouting it; keys travel along.
function wordcount (text) => (counts);

composition loud_word_counts (text) => (counts) {
    upper (in = each text) => (loud = out);
    wordcount (text = each loud) => (counts = counts);
}
