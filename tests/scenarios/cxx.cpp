// Scenario 9 (C++): new/delete, new[]/delete[], std::vector growth and std::string, all
// freed, plus leaks through plain new and new[] from their own functions.
#include <cstdio>
#include <memory>
#include <string>
#include <unistd.h>
#include <vector>

#define NOIPA __attribute__((noipa))

struct Widget {
    long id;
    char name[40];
    Widget *next;
};

Widget *volatile widgets;
int *volatile numbers;

NOIPA void leak_widgets() {
    for (int i = 0; i < 5; i++) {
        Widget *w = new Widget();
        w->id = i;
        w->next = widgets;
        widgets = w;
    }
}

NOIPA void leak_array() { numbers = new int[100](); }

NOIPA long churn() {
    long sum = 0;
    for (int round = 0; round < 50; round++) {
        std::vector<long> v;
        for (int i = 0; i < 1000; i++)
            v.push_back(i);
        std::string s(200, 'x');
        s += std::to_string(round);
        auto u = std::make_unique<Widget>();
        u->id = round;
        Widget *raw = new Widget[3];
        raw[1].id = (long)v.size();
        sum += raw[1].id + (long)s.size() + u->id;
        delete[] raw;
    }
    return sum;
}

int main() {
    long sum = churn();
    leak_widgets();
    leak_array();
    char msg[64];
    int n = std::snprintf(msg, sizeof msg, "cxx sum %ld\n", sum);
    if (write(1, msg, (size_t)n) < 0)
        return 2;
    return 0;
}
