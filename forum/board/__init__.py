"""What the product team runs the board with: voters, edits, hiding spam, the roadmap, managed tags, exports."""
