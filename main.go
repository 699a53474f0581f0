// Command gpubot is a Slack bot that hands out fal GPU machines.
package main

func main() {}
